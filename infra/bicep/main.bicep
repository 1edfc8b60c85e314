// The whole deployment, at subscription scope: one resource group (tagged azd-env-name) holding
//
//   chat app (external ingress) ──> gateway (internal ingress) ──> llama.cpp apps llama-1..N (internal)
//        │                                    └──> optional Azure OpenAI accounts (Entra ID tokens, no keys)
//        └──> PostgreSQL Flexible Server (private, in the virtual network)
//
// plus Log Analytics, the Container Apps environment, a container registry, Key Vault and managed
// identities. Parameters come from main.parameters.json, which maps them to azd environment variables.
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

// After each deploy azd records the image it pushed (SERVICE_<NAME>_IMAGE_NAME), so a later provision keeps
// the apps on it. Before the first deploy they are empty and the apps run a public placeholder.
param gatewayImageName string = ''
param chatImageName string = ''
param llamaImageName string = ''

// ---- llama.cpp backends ---------------------------------------------------------------------------------

@minValue(1)
@maxValue(10)
@description('How many llama.cpp container apps (llama-1..N) the gateway balances over.')
param llamaBackendCount int = 2

@allowed([
  1
  2
  4
])
@description('vCPUs per llama.cpp replica (memory follows: 2 GiB per vCPU); also its thread count.')
param llamaCpuCores int = 2

@minValue(1)
@maxValue(10)
@description('At least 1: the gateway probes every backend every few seconds, which keeps a replica awake anyway.')
param llamaMinReplicas int = 1

@minValue(1)
@maxValue(30)
param llamaMaxReplicas int = 3

@minValue(1)
@description('Concurrent requests per llama.cpp replica before another replica is added (it generates one at a time).')
param llamaConcurrentRequests int = 2

// ---- gateway --------------------------------------------------------------------------------------------

@description('true: the gateway gets a public URL too (for API clients; they need the gateway API key).')
param gatewayExternalIngress bool = false

@minValue(1)
@maxValue(30)
param gatewayMinReplicas int = 1

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

param postgresAdminLogin string = 'chatadmin'

// ---- optional Azure OpenAI ------------------------------------------------------------------------------

// Each instance is { name, location }: a short name (lowercase letters, digits, hyphens) and a region with
// quota for the model, e.g. [{ "name": "eastus", "location": "eastus" }]. Instance <name> becomes the account
// oai-<name>-<token> and the gateway backend aoai-<name>.
@description('Azure OpenAI accounts to create, each { name, location } with the chat deployment below; empty: none.')
param openAiInstances array = []

param openAiModelName string = 'gpt-4o-mini'
param openAiModelVersion string = '2024-07-18'
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
      length: 32
      noSpecial: true
      minLower: 4
      minUpper: 4
      minNumeric: 4
    }
  }
})
@description('PostgreSQL admin password: letters and digits only, because it goes into DATABASE_URL.')
param postgresAdminPassword string

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
// Listens on port 80, not on our ports: a placeholder only until azd deploys the real image.
var placeholderImage = 'mcr.microsoft.com/k8se/quickstart:latest'
// The model id the llama.cpp backends serve, and so the "deployment" the chat app asks the gateway for.
var modelAlias = 'smollm2-135m-instruct'
var llamaPort = 8080
var gatewayPort = 8080
var chatPort = 8000
var azureOpenAiApiVersion = '2024-10-21'

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

// Every app pulls images and reads its Key Vault secrets with this identity.
module appsIdentity 'modules/identity.bicep' = {
  name: 'apps-identity'
  scope: rg
  params: {
    name: 'id-apps-${resourceToken}'
    location: location
    tags: tags
  }
}

// The gateway alone calls Azure OpenAI, with this second identity (AZURE_CLIENT_ID selects it).
module gatewayIdentity 'modules/identity.bicep' = {
  name: 'gateway-identity'
  scope: rg
  params: {
    name: 'id-gateway-${resourceToken}'
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
  }
}

module keyVault 'modules/key-vault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    appsPrincipalId: appsIdentity.outputs.principalId
    userPrincipalId: principalId
  }
}

module gatewayApiKeySecret 'modules/key-vault-secret.bicep' = {
  name: 'secret-gateway-api-key'
  scope: rg
  params: {
    vaultName: keyVault.outputs.name
    name: 'gateway-api-key'
    value: gatewayApiKey
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
    administratorLogin: postgresAdminLogin
    administratorLoginPassword: postgresAdminPassword
    databaseName: 'chat'
    delegatedSubnetId: network.outputs.postgresSubnetId
    virtualNetworkId: network.outputs.id
    keyVaultName: keyVault.outputs.name
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

module openAi 'modules/openai.bicep' = [for (instance, i) in openAiInstances: {
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
  }
}]

// ---- the apps -------------------------------------------------------------------------------------------

// N llama.cpp servers, each its own app with its own replicas. azd deploys the `llama` service to the first
// (only one resource may carry a service's tag); the others run the same image through llamaImageName,
// which the second provision step of `azd up` (azure.yaml) passes on.
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
    image: empty(llamaImageName) ? placeholderImage : llamaImageName
    targetPort: llamaPort
    external: false
    cpu: string(llamaCpuCores)
    memory: '${llamaCpuCores * 2}Gi'
    minReplicas: llamaMinReplicas
    maxReplicas: llamaMaxReplicas
    concurrentRequests: llamaConcurrentRequests
    // Appended to the image's `python -m backends.llamacpp --host 0.0.0.0 --port 8080`.
    args: [
      '--threads'
      string(llamaCpuCores)
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
    // What one app can take at full scale; beyond it the gateway queues, or spills over to Azure OpenAI.
    llamaMaxConcurrency: llamaMaxReplicas * llamaConcurrentRequests
    openAiEndpoints: [for i in range(0, length(openAiInstances)): openAi[i].outputs.endpoint]
    openAiNames: [for instance in openAiInstances: instance.name]
    openAiDeploymentName: openAiDeploymentName
    openAiApiVersion: azureOpenAiApiVersion
    openAiPriority: openAiPriority
  }
}

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
    image: empty(gatewayImageName) ? placeholderImage : gatewayImageName
    targetPort: gatewayPort
    external: gatewayExternalIngress
    cpu: '0.5'
    memory: '1Gi'
    minReplicas: gatewayMinReplicas
    maxReplicas: gatewayMaxReplicas
    concurrentRequests: gatewayConcurrentRequests
    env: [
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
    ]
    secrets: [
      {
        name: 'gateway-api-key'
        keyVaultUrl: gatewayApiKeySecret.outputs.uri
        identity: appsIdentity.outputs.id
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
    registryServer: registry.outputs.loginServer
    image: empty(chatImageName) ? placeholderImage : chatImageName
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
      {
        name: 'DATABASE_URL'
        secretRef: 'database-url'
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
    ]
    secrets: [
      {
        name: 'chat-session-key'
        keyVaultUrl: chatSessionKeySecret.outputs.uri
        identity: appsIdentity.outputs.id
      }
      {
        name: 'database-url'
        keyVaultUrl: postgres.outputs.databaseUrlSecretUri
        identity: appsIdentity.outputs.id
      }
      {
        name: 'gateway-api-key'
        keyVaultUrl: gatewayApiKeySecret.outputs.uri
        identity: appsIdentity.outputs.id
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
output AZURE_POSTGRES_FQDN string = postgres.outputs.fqdn
output AZURE_CHAT_APP_NAME string = chat.outputs.name
output AZURE_CHAT_URL string = chat.outputs.uri
output AZURE_GATEWAY_APP_NAME string = gateway.outputs.name
output AZURE_GATEWAY_URL string = gateway.outputs.uri
output AZURE_LLAMA_APP_NAMES array = [for i in range(0, llamaBackendCount): llama[i].outputs.name]
output AZURE_OPENAI_ENDPOINTS array = [for i in range(0, length(openAiInstances)): openAi[i].outputs.endpoint]
