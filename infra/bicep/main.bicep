// The whole deployment, at subscription scope: one resource group (tagged azd-env-name) holding
//
//   chat app (external ingress) ──> gateway (internal ingress) ──> llama.cpp apps llama-1..N (internal)
//        │                          │         └──> optional Azure OpenAI accounts, created or your own
//        │                          └──> Azure Managed Redis, shared state when the gateway can scale out
//        └──> PostgreSQL Flexible Server (private, in the virtual network)
//
// plus Log Analytics with Application Insights and a routing workbook, the Container Apps environment, a
// container registry, Key Vault and managed identities. No passwords and no access keys: every service-to-
// service call is authenticated with a managed identity's Entra ID token (PostgreSQL, Redis, Azure OpenAI,
// Key Vault, the registry); the only secrets are the gateway API key and the chat session key.
// Parameters come from main.parameters.json, which maps them to azd environment variables.
targetScope = 'subscription'

// ---- azd ------------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment: part of the resource names and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of every resource except the Azure OpenAI accounts, which name their own.')
param location string

@description('Object id of the person running azd (AZURE_PRINCIPAL_ID): may read the Key Vault secrets.')
param principalId string = ''

// After each deploy azd records the image it pushed (SERVICE_<NAME>_IMAGE_NAME), but only on the machine that
// deployed. Before every provision azd also sets SERVICE_<NAME>_RESOURCE_EXISTS: an app that exists keeps
// the image it runs (container-app.bicep), so a provision from another machine or CI never resets it to the
// placeholder or to an older image; the image name is used only for an app created anew.
param gatewayImageName string = ''
param chatImageName string = ''
param llamaImageName string = ''
param gatewayExists bool = false
param chatExists bool = false
param llamaExists bool = false

// ---- llama.cpp backends ---------------------------------------------------------------------------------

// Each llama.cpp app runs exactly one replica: the gateway's backend is then one llama-server with one KV
// cache, so pinning a conversation to llama-2 reaches the cache that holds its prefix. Container Apps'
// ingress would spread a multi-replica app's requests over replicas the gateway cannot tell apart. Scale
// out by adding apps (this count), not replicas.
@minValue(1)
@maxValue(10)
@description('How many llama.cpp container apps (llama-1..N, one replica and one KV cache each) the gateway balances over.')
param llamaBackendCount int = 2

@allowed([
  1
  2
  4
])
@description('vCPUs per llama.cpp replica (memory follows: 2 GiB per vCPU); also its thread count.')
param llamaCpuCores int = 2

// The gateway reads each app's capacity from llama-server's /props (total_slots), so it is set here only.
@minValue(1)
@maxValue(16)
@description('Slots of each llama.cpp app (llama-server --parallel): requests it serves at once, batched together.')
param llamaParallel int = 4

// ---- gateway --------------------------------------------------------------------------------------------

@description('true: the gateway gets a public URL too (for API clients; they need the gateway API key).')
param gatewayExternalIngress bool = false

@minValue(1)
@maxValue(30)
param gatewayMinReplicas int = 1

// Above 1, the template provisions Azure Managed Redis and sets GATEWAY_STATE_URL, so that the replicas
// share each backend's concurrency count, cooldowns and breaker instead of each applying them alone.
@minValue(1)
@maxValue(30)
param gatewayMaxReplicas int = 3

@minValue(1)
param gatewayConcurrentRequests int = 50

@allowed([
  'debug'
  'info'
  'warning'
  'error'
])
param gatewayLogLevel string = 'info'

// ---- chat app -------------------------------------------------------------------------------------------

@minValue(1)
@maxValue(30)
param chatMinReplicas int = 1

@minValue(1)
@maxValue(30)
param chatMaxReplicas int = 3

@minValue(1)
param chatConcurrentRequests int = 20

// ---- PostgreSQL -----------------------------------------------------------------------------------------

param postgresSkuName string = 'Standard_B1ms'

@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param postgresSkuTier string = 'Burstable'

@minValue(32)
param postgresStorageSizeGB int = 32

// ---- optional Azure OpenAI ------------------------------------------------------------------------------

// One account in a region that offers the default model (gpt-4.1-mini 2025-04-14) as GlobalStandard, per
// Microsoft's model availability table; empty: none. Another model may need another list (check the table,
// and your quota with `az cognitiveservices usage list -l <region>`).
@allowed([
  ''
  'australiaeast'
  'brazilsouth'
  'canadaeast'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'norwayeast'
  'polandcentral'
  'southafricanorth'
  'southcentralus'
  'southindia'
  'spaincentral'
  'swedencentral'
  'switzerlandnorth'
  'uaenorth'
  'uksouth'
  'westeurope'
  'westus'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
    usageName: [
      'OpenAI.GlobalStandard.gpt-4.1-mini,30'
    ]
  }
})
@description('Region of one Azure OpenAI account (backend aoai-<region>) with the chat deployment below; empty: none.')
param openAiLocation string = ''

// More accounts, each { name, location }: a short name (lowercase letters, digits, hyphens) and a region with
// quota for the model, e.g. [{ "name": "sweden", "location": "swedencentral" }]. Instance <name> becomes the
// account oai-<name>-<token> and the gateway backend aoai-<name>.
@description('Further Azure OpenAI accounts to create, each { name, location }; empty: none.')
param openAiInstances array = []

// Accounts you already have, each { name, resourceGroup, accountName, deployment }: the gateway backend
// aoai-<name> calls deployment <deployment> of account <accountName> in resource group <resourceGroup> (this
// subscription), with the gateway identity, which gets "Cognitive Services OpenAI User" on that account.
@description('Existing Azure OpenAI accounts to use, each { name, resourceGroup, accountName, deployment }; empty: none.')
param openAiExisting array = []

// A chat model that takes the chat app's parameters (max_tokens, temperature): reasoning models (o-series,
// the gpt-5 family) refuse max_tokens.
param openAiModelName string = 'gpt-4.1-mini'
param openAiModelVersion string = '2025-04-14'
param openAiDeploymentName string = 'chat'

@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
param openAiDeploymentSku string = 'GlobalStandard'

@minValue(1)
@description('Capacity of each deployment in thousands of tokens per minute (TPM).')
param openAiCapacity int = 30

@description('Gateway priority of the Azure OpenAI backends (llama.cpp has 0; lower is preferred).')
param openAiPriority int = 1

// ---- secrets: generated once by azd and kept in the azd environment, never typed in ----------------------

@secure()
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 43
      noSpecial: true
    }
  }
})
@description('43 random letters and digits: with a trailing "=", the url-safe base64 of a 32-byte Fernet key.')
param chatSessionSecret string

@secure()
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 40
      noSpecial: true
    }
  }
})
@description('The gateway API key; the chat app presents it too.')
param gatewayApiKey string

// ---- names and constants --------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
// The model id the llama.cpp backends serve, and so the "deployment" the chat app asks the gateway for.
var modelAlias = 'smollm2-135m-instruct'
// Context of each llama.cpp slot in tokens; llama-server divides its --ctx-size among the slots (as the local
// launcher's --ctx-per-slot default).
var llamaCtxPerSlot = 2048
var llamaPort = 8080
var gatewayPort = 8080
var chatPort = 8000
var azureOpenAiApiVersion = '2024-10-21'
var sharedGatewayState = gatewayMaxReplicas > 1
var openAiCreated = concat(empty(openAiLocation) ? [] : [
  {
    name: openAiLocation
    location: openAiLocation
  }
], openAiInstances)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

// ---- shared infrastructure ------------------------------------------------------------------------------

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    name: 'log-${resourceToken}'
    location: location
    tags: tags
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  scope: rg
  params: {
    name: 'vnet-${resourceToken}'
    location: location
    tags: tags
  }
}

// Every app pulls its image with this identity, which can do nothing else (AcrPull on the registry).
module appsIdentity 'modules/identity.bicep' = {
  name: 'apps-identity'
  scope: rg
  params: {
    name: 'id-apps-${resourceToken}'
    location: location
    tags: tags
  }
}

// The gateway's own identity (AZURE_CLIENT_ID): its API key secret, Azure OpenAI, Redis.
module gatewayIdentity 'modules/identity.bicep' = {
  name: 'gateway-identity'
  scope: rg
  params: {
    name: 'id-gateway-${resourceToken}'
    location: location
    tags: tags
  }
}

// The chat app's own identity (AZURE_CLIENT_ID): its two secrets and PostgreSQL. The llama.cpp apps have no
// identity of their own: they read no secret and call nothing.
module chatIdentity 'modules/identity.bicep' = {
  name: 'chat-identity'
  scope: rg
  params: {
    name: 'id-chat-${resourceToken}'
    location: location
    tags: tags
  }
}

module registry 'modules/container-registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    name: 'cr${resourceToken}'
    location: location
    tags: tags
    pullPrincipalId: appsIdentity.outputs.principalId
    workspaceId: monitoring.outputs.id
  }
}

module keyVault 'modules/key-vault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    userPrincipalId: principalId
    workspaceId: monitoring.outputs.id
  }
}

module gatewayApiKeySecret 'modules/key-vault-secret.bicep' = {
  name: 'secret-gateway-api-key'
  scope: rg
  params: {
    vaultName: keyVault.outputs.name
    name: 'gateway-api-key'
    value: gatewayApiKey
    readerPrincipalIds: [
      gatewayIdentity.outputs.principalId
      chatIdentity.outputs.principalId
    ]
  }
}

// A Fernet key is 32 random bytes in url-safe base64: 43 characters of that alphabet and one "=" of padding.
module chatSessionKeySecret 'modules/key-vault-secret.bicep' = {
  name: 'secret-chat-session-key'
  scope: rg
  params: {
    vaultName: keyVault.outputs.name
    name: 'chat-session-key'
    value: '${chatSessionSecret}='
    readerPrincipalIds: [
      chatIdentity.outputs.principalId
    ]
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  scope: rg
  params: {
    name: 'psql-${resourceToken}'
    location: location
    tags: tags
    version: '16'
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    storageSizeGB: postgresStorageSizeGB
    appPrincipalId: chatIdentity.outputs.principalId
    appPrincipalName: chatIdentity.outputs.name
    databaseName: 'chat'
    delegatedSubnetId: network.outputs.postgresSubnetId
    virtualNetworkId: network.outputs.id
    workspaceId: monitoring.outputs.id
  }
}

module redis 'modules/redis.bicep' = if (sharedGatewayState) {
  name: 'redis'
  scope: rg
  params: {
    name: 'redis-${resourceToken}'
    location: location
    tags: tags
    gatewayPrincipalId: gatewayIdentity.outputs.principalId
    workspaceId: monitoring.outputs.id
  }
}

module containerAppsEnvironment 'modules/container-apps-environment.bicep' = {
  name: 'container-apps-environment'
  scope: rg
  params: {
    name: 'cae-${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceName: monitoring.outputs.name
    infrastructureSubnetId: network.outputs.appsSubnetId
  }
}

module openAi 'modules/openai.bicep' = [for (instance, i) in openAiCreated: {
  name: 'openai-${i}'
  scope: rg
  params: {
    name: 'oai-${instance.name}-${resourceToken}'
    location: instance.location
    tags: tags
    deploymentName: openAiDeploymentName
    modelName: openAiModelName
    modelVersion: openAiModelVersion
    deploymentSku: openAiDeploymentSku
    capacity: openAiCapacity
    gatewayPrincipalId: gatewayIdentity.outputs.principalId
    userPrincipalId: principalId
    workspaceId: monitoring.outputs.id
  }
}]

// Bring your own: only a role assignment, in the account's resource group.
module openAiExistingAccess 'modules/openai-existing.bicep' = [for (account, i) in openAiExisting: {
  name: 'openai-existing-${i}'
  scope: resourceGroup(account.resourceGroup)
  params: {
    accountName: account.accountName
    gatewayPrincipalId: gatewayIdentity.outputs.principalId
  }
}]

// ---- the apps -------------------------------------------------------------------------------------------

// N llama.cpp servers, each its own app held at one replica (see llamaBackendCount). azd deploys the `llama`
// service to the first (only one resource may carry a service's tag); the others run the image llama-1 runs,
// read at every provision. So `azd up` (provision, deploy, provision: azure.yaml) updates them all, and
// after a bare `azd deploy` an `azd provision` brings llama-2..N to llama-1's image.
module llama 'modules/container-app.bicep' = [for i in range(0, llamaBackendCount): {
  name: 'llama-${i + 1}'
  scope: rg
  params: {
    name: 'ca-llama-${i + 1}-${resourceToken}'
    location: location
    tags: tags
    serviceName: (i == 0) ? 'llama' : ''
    environmentId: containerAppsEnvironment.outputs.id
    identityName: appsIdentity.outputs.name
    registryServer: registry.outputs.loginServer
    image: llamaImageName
    exists: llamaExists
    imageSourceAppName: (i == 0) ? '' : 'ca-llama-1-${resourceToken}'
    targetPort: llamaPort
    external: false
    cpu: string(llamaCpuCores)
    memory: '${llamaCpuCores * 2}Gi'
    minReplicas: 1
    maxReplicas: 1
    concurrentRequests: llamaParallel
    // In place of the image's CMD, after its entrypoint (llama-server with the model, host, port and the
    // endpoints the gateway reads): what this deployment sizes.
    args: [
      '--threads'
      string(llamaCpuCores)
      '--parallel'
      string(llamaParallel)
      '--ctx-size'
      string(llamaParallel * llamaCtxPerSlot)
      '--alias'
      modelAlias
    ]
    env: []
    secrets: []
    // /v1/models answers only once the model is loaded, and without waiting for a running generation;
    // liveness is a bare TCP check so that a replica busy generating is never restarted.
    probes: [
      {
        type: 'Startup'
        httpGet: {
          path: '/v1/models'
          port: llamaPort
        }
        initialDelaySeconds: 5
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 10
      }
      {
        type: 'Readiness'
        httpGet: {
          path: '/v1/models'
          port: llamaPort
        }
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 3
      }
      {
        type: 'Liveness'
        tcpSocket: {
          port: llamaPort
        }
        periodSeconds: 20
        failureThreshold: 3
      }
    ]
  }
}]

module gatewayBackends 'modules/gateway-backends.bicep' = {
  name: 'gateway-backends'
  scope: rg
  params: {
    llamaFqdns: [for i in range(0, llamaBackendCount): llama[i].outputs.fqdn]
    openAiNames: [for instance in openAiCreated: instance.name]
    openAiEndpoints: [for i in range(0, length(openAiCreated)): openAi[i].outputs.endpoint]
    openAiDeploymentName: openAiDeploymentName
    openAiExisting: openAiExisting
    openAiExistingEndpoints: [for i in range(0, length(openAiExisting)): openAiExistingAccess[i].outputs.endpoint]
    openAiApiVersion: azureOpenAiApiVersion
    openAiPriority: openAiPriority
  }
}

// Redis with Entra ID (GATEWAY_STATE_AUTH=entra): the gateway (AZURE_CLIENT_ID) presents a token for
// https://redis.azure.com/.default as the password, and the token's object id as the user name. No Redis
// when a single replica holds the state.
var gatewayStateEnv = sharedGatewayState ? [
  {
    name: 'GATEWAY_STATE_URL'
    value: 'rediss://${redis.outputs.hostName}:${redis.outputs.port}'
  }
  {
    name: 'GATEWAY_STATE_AUTH'
    value: 'entra'
  }
] : []

var gatewayEnv = [
  {
    name: 'GATEWAY_HOST'
    value: '0.0.0.0'
  }
  {
    name: 'GATEWAY_PORT'
    value: string(gatewayPort)
  }
  {
    name: 'GATEWAY_BACKENDS'
    value: gatewayBackends.outputs.json
  }
  {
    name: 'GATEWAY_API_KEYS'
    secretRef: 'gateway-api-key'
  }
  {
    name: 'GATEWAY_LOG_LEVEL'
    value: gatewayLogLevel
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: gatewayIdentity.outputs.clientId
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: monitoring.outputs.appInsightsConnectionString
  }
]

module gateway 'modules/container-app.bicep' = {
  name: 'gateway'
  scope: rg
  params: {
    name: 'ca-gateway-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'gateway'
    environmentId: containerAppsEnvironment.outputs.id
    identityName: appsIdentity.outputs.name
    additionalIdentityName: gatewayIdentity.outputs.name
    registryServer: registry.outputs.loginServer
    image: gatewayImageName
    exists: gatewayExists
    targetPort: gatewayPort
    external: gatewayExternalIngress
    cpu: '0.5'
    memory: '1Gi'
    minReplicas: gatewayMinReplicas
    maxReplicas: gatewayMaxReplicas
    concurrentRequests: gatewayConcurrentRequests
    env: concat(gatewayEnv, gatewayStateEnv)
    secrets: [
      {
        name: 'gateway-api-key'
        keyVaultUrl: gatewayApiKeySecret.outputs.uri
        identity: gatewayIdentity.outputs.id
      }
    ]
    // Readiness is /healthz, not /readyz: with every backend loading, the gateway should still answer the
    // chat app with its own OpenAI-shaped 503 rather than be taken out of the ingress.
    probes: [
      {
        type: 'Startup'
        httpGet: {
          path: '/healthz'
          port: gatewayPort
        }
        initialDelaySeconds: 2
        periodSeconds: 5
        failureThreshold: 10
      }
      {
        type: 'Readiness'
        httpGet: {
          path: '/healthz'
          port: gatewayPort
        }
        periodSeconds: 10
        failureThreshold: 3
      }
      {
        type: 'Liveness'
        httpGet: {
          path: '/healthz'
          port: gatewayPort
        }
        periodSeconds: 20
        failureThreshold: 3
      }
    ]
  }
}

module chat 'modules/container-app.bicep' = {
  name: 'chat'
  scope: rg
  params: {
    name: 'ca-chat-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'chat'
    environmentId: containerAppsEnvironment.outputs.id
    identityName: appsIdentity.outputs.name
    additionalIdentityName: chatIdentity.outputs.name
    registryServer: registry.outputs.loginServer
    image: chatImageName
    exists: chatExists
    targetPort: chatPort
    external: true
    cpu: '0.5'
    memory: '1Gi'
    minReplicas: chatMinReplicas
    maxReplicas: chatMaxReplicas
    concurrentRequests: chatConcurrentRequests
    // The gateway's Azure-shaped endpoint, as in Microsoft's load-balancer sample (OPENAI_HOST=azure_custom);
    // the "deployment" is the model the llama.cpp backends serve.
    env: [
      {
        name: 'CHAT_HOST'
        value: '0.0.0.0'
      }
      {
        name: 'CHAT_PORT'
        value: string(chatPort)
      }
      {
        name: 'CHAT_SESSION_KEY'
        secretRef: 'chat-session-key'
      }
      // No password in it: DATABASE_AZURE_AUTH makes the app sign in with its identity's Entra ID token.
      {
        name: 'DATABASE_URL'
        value: postgres.outputs.databaseUrl
      }
      {
        name: 'DATABASE_AZURE_AUTH'
        value: 'true'
      }
      // verify-full checks the server's certificate against the image's CA bundle (Debian ca-certificates);
      // asyncpg otherwise looks for ~/.postgresql/root.crt.
      {
        name: 'PGSSLROOTCERT'
        value: '/etc/ssl/certs/ca-certificates.crt'
      }
      {
        name: 'AZURE_CLIENT_ID'
        value: chatIdentity.outputs.clientId
      }
      {
        name: 'OPENAI_HOST'
        value: 'azure_custom'
      }
      {
        name: 'AZURE_OPENAI_CUSTOM_URL'
        value: '${gateway.outputs.uri}/openai'
      }
      {
        name: 'AZURE_OPENAI_CHAT_DEPLOYMENT'
        value: modelAlias
      }
      {
        name: 'AZURE_OPENAI_API_KEY'
        secretRef: 'gateway-api-key'
      }
      {
        name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
        value: monitoring.outputs.appInsightsConnectionString
      }
    ]
    secrets: [
      {
        name: 'chat-session-key'
        keyVaultUrl: chatSessionKeySecret.outputs.uri
        identity: chatIdentity.outputs.id
      }
      {
        name: 'gateway-api-key'
        keyVaultUrl: gatewayApiKeySecret.outputs.uri
        identity: chatIdentity.outputs.id
      }
    ]
    // /healthz also asks the database; liveness is TCP so that a database outage doesn't restart the app.
    probes: [
      {
        type: 'Startup'
        httpGet: {
          path: '/healthz'
          port: chatPort
        }
        initialDelaySeconds: 5
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 10
      }
      {
        type: 'Readiness'
        httpGet: {
          path: '/healthz'
          port: chatPort
        }
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 3
      }
      {
        type: 'Liveness'
        tcpSocket: {
          port: chatPort
        }
        periodSeconds: 20
        failureThreshold: 3
      }
    ]
  }
}

// ---- outputs: azd stores them in the environment (azd env get-values) -----------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_ENVIRONMENT_NAME string = containerAppsEnvironment.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.name
output AZURE_MONITOR_WORKBOOK_NAME string = monitoring.outputs.workbookName
output AZURE_POSTGRES_FQDN string = postgres.outputs.fqdn
output AZURE_REDIS_HOST string = sharedGatewayState ? redis.outputs.hostName : ''
output AZURE_CHAT_APP_NAME string = chat.outputs.name
output AZURE_CHAT_URL string = chat.outputs.uri
output AZURE_GATEWAY_APP_NAME string = gateway.outputs.name
output AZURE_GATEWAY_URL string = gateway.outputs.uri
output AZURE_LLAMA_APP_NAMES array = [for i in range(0, llamaBackendCount): llama[i].outputs.name]
output AZURE_OPENAI_ENDPOINTS array = [for i in range(0, length(openAiCreated)): openAi[i].outputs.endpoint]
// The images the apps run, so that every machine's azd environment has them after a provision.
output SERVICE_GATEWAY_IMAGE_NAME string = gateway.outputs.imageName
output SERVICE_CHAT_IMAGE_NAME string = chat.outputs.imageName
output SERVICE_LLAMA_IMAGE_NAME string = llama[0].outputs.imageName
