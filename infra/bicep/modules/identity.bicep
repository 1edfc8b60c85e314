// A user-assigned managed identity: created before the apps, so its role assignments exist (and have
// propagated) by the time an app first pulls an image or reads a secret.

@description('Name of the identity.')
param name string

param location string = resourceGroup().location
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
