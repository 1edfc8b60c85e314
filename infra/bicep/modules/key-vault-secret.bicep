// One secret in an existing vault, readable by exactly the identities that need it: "Key Vault Secrets User"
// is assigned on the secret, not on the vault, so an app reads its own secrets and no other. The value
// arrives as a secure parameter, so it never shows in the deployment history; the apps reference the
// secret by its versionless URI and so follow rotations.

@description('Name of the existing vault.')
param vaultName string

@description('Name of the secret.')
param name string

@secure()
param value string

@description('Principal ids of the managed identities that may read this secret (and only this one).')
param readerPrincipalIds array = []

var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: name
  properties: {
    value: value
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in readerPrincipalIds: {
  name: guid(secret.id, principalId, secretsUserRoleId)
  scope: secret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

output name string = secret.name
output uri string = secret.properties.secretUri
