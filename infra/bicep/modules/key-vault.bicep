// Key Vault for the apps' secrets (chat session key, gateway API key). Access is by Azure RBAC only: each
// app's identity may read its own secrets (assigned per secret, key-vault-secret.bicep), the person running
// azd may read them all (to fetch the gateway API key); nobody gets a vault access policy. Every data-plane
// access is logged to Log Analytics (the audit category).

@description('Name of the vault: 3-24 characters, globally unique.')
param name string

param location string = resourceGroup().location
param tags object = {}

@description('Object id of the user running azd (AZURE_PRINCIPAL_ID); empty: no user access.')
param userPrincipalId string = ''

@description('Log Analytics workspace that receives the vault\'s audit logs and metrics.')
param workspaceId string

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

resource userSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(vault.id, userPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: userPrincipalId
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
