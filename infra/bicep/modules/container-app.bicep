// One container app: a single container, HTTP ingress (internal unless `external`), a managed identity to
// pull from the registry and optionally the app's own (Key Vault secrets, Azure calls), and an
// HTTP-concurrency scale rule when it may scale. The app an azd service deploys to carries that service's
// azd-service-name tag.
//
// Which image runs, in order: the image the app (or `imageSourceAppName`) runs now, when azd says it exists
// (SERVICE_<NAME>_RESOURCE_EXISTS, which azd sets before every provision), so that a provision from another
// machine or CI never resets a deployed app, nor rolls it back to an older SERVICE_<NAME>_IMAGE_NAME kept in
// a stale .azure/<env>/.env; else `image` (that variable, for an app created anew); else a public
// placeholder. The placeholder listens on port 80 and has no health endpoint: while it runs, the ingress
// targets 80 and the app has no custom probes.

@description('Name of the app: lowercase letters, digits and hyphens, at most 32 characters.')
@maxLength(32)
param name string

param location string = resourceGroup().location
param tags object = {}

@description('The azd service (azure.yaml) deployed to this app; empty for an app azd does not deploy to.')
param serviceName string = ''

@description('Resource id of the Container Apps environment.')
param environmentId string

@description('User-assigned identity (same resource group) the app pulls its image with.')
param identityName string

@description('The app\'s own user-assigned identity: Key Vault secrets, its calls to Azure (AZURE_CLIENT_ID); empty: none.')
param additionalIdentityName string = ''

@description('Registry the image is pulled from.')
param registryServer string

@description('Image azd deployed (SERVICE_<NAME>_IMAGE_NAME), for an app that does not exist yet; empty: the placeholder.')
param image string = ''

@description('SERVICE_<NAME>_RESOURCE_EXISTS: the app (or imageSourceAppName) exists and keeps its image.')
param exists bool = false

@description('The app whose running image this one takes when `image` is empty; empty: this app itself.')
param imageSourceAppName string = ''

@description('The port the real image listens on (the placeholder listens on 80).')
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

@description('Startup, readiness and liveness probes of the real image (none while the placeholder runs).')
param probes array = []

// Listens on port 80 and answers any path: only until azd deploys the real image.
var placeholderImage = 'mcr.microsoft.com/k8se/quickstart:latest'
var placeholderPort = 80

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource running 'Microsoft.App/containerApps@2024-03-01' existing = if (exists) {
  name: empty(imageSourceAppName) ? name : imageSourceAppName
}

var resolvedImage = exists ? running.properties.template.containers[0].image : (empty(image) ? placeholderImage : image)
var isPlaceholder = resolvedImage == placeholderImage

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
        targetPort: isPlaceholder ? placeholderPort : targetPort
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
          image: resolvedImage
          args: (empty(args) || isPlaceholder) ? null : args
          env: env
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          probes: isPlaceholder ? [] : probes
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        // An app held at one replica (min = max) gets no rule: there is nothing to scale.
        rules: (minReplicas == maxReplicas) ? [] : [
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
// Becomes SERVICE_<NAME>_IMAGE_NAME in main.bicep's outputs, so every machine's azd environment learns it.
output imageName string = resolvedImage
