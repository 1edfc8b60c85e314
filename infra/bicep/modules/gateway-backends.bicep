// The gateway's GATEWAY_BACKENDS: a JSON array built from the llama.cpp apps' internal addresses and the
// Azure OpenAI endpoints. A module of its own because a variable loop may only use values known when the
// deployment starts: here the addresses arrive as parameters, which they are.

@description('Internal FQDNs of the llama.cpp backend apps, in order: backend i is named llama-<i+1>.')
param llamaFqdns array

@description('Short names of the Azure OpenAI accounts this template created: backend i is named aoai-<name>.')
param openAiNames array = []

@description('Their endpoints (https://NAME.openai.azure.com/), in the order of openAiNames.')
param openAiEndpoints array = []

@description('The chat deployment created in each of them.')
param openAiDeploymentName string = ''

@description('Accounts brought along: { name, resourceGroup, accountName, deployment }, as main.bicep\'s openAiExisting.')
param openAiExisting array = []

@description('Their endpoints, in the order of openAiExisting.')
param openAiExistingEndpoints array = []

param openAiApiVersion string = '2024-10-21'

@description('Lower is preferred: 0 shares traffic with llama.cpp, 1 only takes what llama.cpp cannot.')
param openAiPriority int = 1

// llama-server: the gateway reads each one's slots (/props), readiness (/health) and load (/metrics).
var llamaBackends = [for (fqdn, i) in llamaFqdns: {
  name: 'llama-${i + 1}'
  kind: 'llama-server'
  url: 'https://${fqdn}/v1'
  priority: 0
}]

// No api_key: the gateway authenticates with its managed identity (AZURE_CLIENT_ID).
var createdBackends = [for (endpoint, i) in openAiEndpoints: {
  name: 'aoai-${openAiNames[i]}'
  kind: 'azure'
  url: endpoint
  deployment: openAiDeploymentName
  api_version: openAiApiVersion
  priority: openAiPriority
}]

var existingBackends = [for (endpoint, i) in openAiExistingEndpoints: {
  name: 'aoai-${openAiExisting[i].name}'
  kind: 'azure'
  url: endpoint
  deployment: openAiExisting[i].deployment
  api_version: openAiApiVersion
  priority: openAiPriority
}]

output json string = string(concat(llamaBackends, createdBackends, existingBackends))
