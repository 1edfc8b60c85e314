// Key Vault for the apps' secrets (PostgreSQL password and URL, chat session key, gateway API key).
// Access is by Azure RBAC only: the apps' identity may read secrets, and so may the person running azd
// (to fetch the gateway API key); nobody gets a vault access policy.

@description('Name of the vault: 3-24 characters, globally unique.')
param name string

param location string = resourceGroup().location
param tags object = {}

@description('Principal id of the identity the container apps read their secrets with.')
param appsPrincipalId string

@description('Object id of the user running azd (AZURE_PRINCIPAL_ID); empty: no user access.')
param userPrincipalId string = ''

var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource appsSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appsPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: appsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(vault.id, userPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: userPrincipalId
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
