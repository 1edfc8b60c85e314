// The gateway's GATEWAY_BACKENDS: a JSON array built from the llama.cpp apps' internal addresses and the
// Azure OpenAI endpoints. A module of its own because a variable loop may only use values known when the
// deployment starts: here the addresses arrive as parameters, which they are.

@description('Internal FQDNs of the llama.cpp backend apps, in order: backend i is named llama-<i+1>.')
param llamaFqdns array

@description('Requests one llama.cpp app takes at once before the gateway queues or spills over.')
@minValue(1)
param llamaMaxConcurrency int

@description('Azure OpenAI endpoints (https://NAME.openai.azure.com/), in the order of openAiNames.')
param openAiEndpoints array = []

@description('Short names of the Azure OpenAI instances: backend i is named aoai-<name>.')
param openAiNames array = []

param openAiDeploymentName string = ''
param openAiApiVersion string = '2024-10-21'

@description('Lower is preferred: 0 shares traffic with llama.cpp, 1 only takes what llama.cpp cannot.')
param openAiPriority int = 1

var llamaBackends = [for (fqdn, i) in llamaFqdns: {
  name: 'llama-${i + 1}'
  kind: 'llamacpp'
  url: 'https://${fqdn}/v1'
  priority: 0
  max_concurrency: llamaMaxConcurrency
}]

// No api_key: the gateway authenticates with its managed identity (AZURE_CLIENT_ID).
var openAiBackends = [for (endpoint, i) in openAiEndpoints: {
  name: 'aoai-${openAiNames[i]}'
  kind: 'azure'
  url: endpoint
  deployment: openAiDeploymentName
  api_version: openAiApiVersion
  priority: openAiPriority
}]

output json string = string(concat(llamaBackends, openAiBackends))
