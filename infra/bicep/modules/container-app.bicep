// One container app: a single container, HTTP ingress (internal unless `external`), managed identities
// for the registry and Key Vault, and an HTTP-concurrency scale rule between minReplicas and maxReplicas.
// The app an azd service deploys to carries that service's azd-service-name tag.

@description('Name of the app: lowercase letters, digits and hyphens, at most 32 characters.')
@maxLength(32)
param name string

param location string = resourceGroup().location
param tags object = {}

@description('The azd service (azure.yaml) deployed to this app; empty for an app azd does not deploy to.')
param serviceName string = ''

@description('Resource id of the Container Apps environment.')
param environmentId string

@description('User-assigned identity (same resource group) the app pulls its image and reads its secrets with.')
param identityName string

@description('A second user-assigned identity for the app\'s own calls to Azure (its AZURE_CLIENT_ID); empty: none.')
param additionalIdentityName string = ''

@description('Registry the image is pulled from.')
param registryServer string

@description('Image to run. Before azd first deploys the service, a public placeholder.')
param image string

param targetPort int

@description('true: reachable from the internet; false: only from apps in the same environment.')
param external bool = false

@description('vCPUs, as a string (Bicep has no decimals): 0.25 to 4, with memory = 2 GiB per vCPU.')
param cpu string
param memory string

@minValue(0)
@maxValue(300)
param minReplicas int = 1

@minValue(1)
@maxValue(300)
param maxReplicas int = 3

@description('Concurrent requests per replica above which Container Apps adds a replica.')
@minValue(1)
param concurrentRequests int = 10

@description('Arguments appended to the image entrypoint (replace its CMD); empty: the image CMD.')
param args array = []

@description('Environment variables: { name, value } or { name, secretRef }.')
param env array = []

@description('Secrets: { name, keyVaultUrl, identity } references to Key Vault secrets (identity: a resource id).')
param secrets array = []

@description('Startup, readiness and liveness probes.')
param probes array = []

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

var primaryIdentity = {
  '${identity.id}': {}
}
var additionalIdentityId = resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', additionalIdentityName)
var additionalIdentity = empty(additionalIdentityName) ? {} : {
  '${additionalIdentityId}': {}
}
var serviceTag = empty(serviceName) ? {} : {
  'azd-service-name': serviceName
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  tags: union(tags, serviceTag)
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: union(primaryIdentity, additionalIdentity)
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: external
        targetPort: targetPort
        transport: 'auto'
        allowInsecure: false
      }
      registries: [
        {
          server: registryServer
          identity: identity.id
        }
      ]
      secrets: secrets
    }
    template: {
      containers: [
        {
          name: 'main'
          image: image
          args: empty(args) ? null : args
          env: env
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          probes: probes
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'http-concurrency'
            http: {
              metadata: {
                concurrentRequests: string(concurrentRequests)
              }
            }
          }
        ]
      }
    }
  }
}

output name string = app.name
output fqdn string = app.properties.configuration.ingress.fqdn
output uri string = 'https://${app.properties.configuration.ingress.fqdn}'
