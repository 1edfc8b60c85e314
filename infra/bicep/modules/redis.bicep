// Azure Managed Redis: the gateway replicas' shared state (GATEWAY_STATE_URL), so that a backend's
// max_concurrency, cooldowns and circuit breaker hold across replicas instead of multiplying with them.
// Access keys are disabled: the gateway signs in with Microsoft Entra ID, as its managed identity (the
// username is the identity's object id, the password a token for https://redis.azure.com/.default), over
// TLS on port 10000. EnterpriseCluster presents one endpoint, so a non-cluster Redis client works.

@description('Name of the cache: globally unique, lowercase letters, digits and hyphens.')
param name string

param location string = resourceGroup().location
param tags object = {}

@description('Smallest size: Balanced_B0 (0.5 GB); the gateway keeps a few keys per backend.')
param skuName string = 'Balanced_B0'

@description('Principal (object) id of the gateway identity: the only one given data access.')
param gatewayPrincipalId string

@description('Log Analytics workspace that receives the cache\'s metrics.')
param workspaceId string

resource cache 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: '1.2'
    // Reached over its public endpoint, by Entra ID token only (no keys); a private endpoint would need a
    // DNS zone and a subnet for a cache that holds counters, not data.
    publicNetworkAccess: 'Enabled'
    highAvailability: 'Disabled'
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cache
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    clusteringPolicy: 'EnterpriseCluster'
    // The state is small and must not be evicted silently: a full cache should fail loudly.
    evictionPolicy: 'NoEviction'
    accessKeysAuthentication: 'Disabled'
  }
}

resource gatewayAccess 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = {
  parent: database
  name: 'gateway'
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: gatewayPrincipalId
    }
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: cache
  properties: {
    workspaceId: workspaceId
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = cache.name
output hostName string = cache.properties.hostName
output port int = database.properties.port
