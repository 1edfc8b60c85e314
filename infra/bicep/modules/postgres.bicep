// PostgreSQL Flexible Server inside the virtual network (no public endpoint), with the chat database. No
// password exists: authentication is Microsoft Entra ID only, and the one principal is the chat app's
// managed identity, which signs in with a token (scope https://ossrdbms-aad.database.windows.net/.default)
// as its password. It is the server's Entra administrator because a narrower role can only be created by
// SQL run from inside the virtual network (pgaadauth_create_principal); the server holds nothing but the
// chat app's own database. Logs and metrics go to Log Analytics.

@description('Name of the server: globally unique, lowercase letters, digits and hyphens.')
param name string

param location string = resourceGroup().location
param tags object = {}

@allowed([
  '14'
  '15'
  '16'
])
param version string = '16'

@description('Compute size, e.g. Standard_B1ms (Burstable, 1 vCore, 2 GiB) or Standard_D2ds_v5 (GeneralPurpose).')
param skuName string = 'Standard_B1ms'

@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param skuTier string = 'Burstable'

@minValue(32)
param storageSizeGB int = 32

@description('Principal (object) id of the chat app\'s managed identity: the Entra administrator.')
param appPrincipalId string

@description('Name of that identity: the PostgreSQL user it signs in as.')
param appPrincipalName string

param databaseName string

@description('Subnet delegated to Microsoft.DBforPostgreSQL/flexibleServers.')
param delegatedSubnetId string

@description('The virtual network the private DNS zone is linked to, so that the apps resolve the server.')
param virtualNetworkId string

@description('Log Analytics workspace that receives the server\'s logs and metrics.')
param workspaceId string

// With VNet integration the server's name resolves through this private zone; its name must end with
// .postgres.database.azure.com.
resource dnsZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: '${name}.private.postgres.database.azure.com'
  location: 'global'
  tags: tags
}

resource dnsZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: dnsZone
  name: 'vnet'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: virtualNetworkId
    }
  }
}

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuTier
  }
  properties: {
    version: version
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: tenant().tenantId
    }
    storage: {
      storageSizeGB: storageSizeGB
    }
    backup: {
      backupRetentionDays: 7
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
    network: {
      delegatedSubnetResourceId: delegatedSubnetId
      privateDnsZoneArmResourceId: dnsZone.id
      publicNetworkAccess: 'Disabled'
    }
  }
  dependsOn: [
    dnsZoneLink
  ]
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

resource appAdministrator 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: server
  name: appPrincipalId
  properties: {
    principalType: 'ServicePrincipal'
    principalName: appPrincipalName
    tenantId: tenant().tenantId
  }
  dependsOn: [
    database
  ]
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: server
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
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

output name string = server.name
output fqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
// What the chat app's DATABASE_URL holds: no password (the app fetches a token), and verify-full, so that
// the TLS certificate must name this server and chain to a trusted root.
output databaseUrl string = 'postgresql://${appPrincipalName}@${server.properties.fullyQualifiedDomainName}:5432/${database.name}?sslmode=verify-full'
