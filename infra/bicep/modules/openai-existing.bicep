// An Azure OpenAI account you already have (bring your own): nothing is created but the gateway identity's
// "Cognitive Services OpenAI User" role on it, so the gateway reaches it with Entra ID tokens as it does the
// accounts this template creates. Deployed into the account's own resource group; the person running azd
// needs the right to assign roles there (Owner, or Role Based Access Control Administrator).

@description('Name of the existing Azure OpenAI (or AI Services) account, in this module\'s resource group.')
param accountName string

@description('Principal id of the gateway identity.')
param gatewayPrincipalId string

var openAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource gatewayOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, gatewayPrincipalId, openAiUserRoleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRoleId)
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output endpoint string = account.properties.endpoint
