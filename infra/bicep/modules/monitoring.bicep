// Log Analytics: where the Container Apps environment sends every app's stdout (the gateway's JSON routing
// lines end up in ContainerAppConsoleLogs_CL) and the platform's system events.

@description('Name of the Log Analytics workspace.')
param name string

param location string = resourceGroup().location
param tags object = {}

@minValue(30)
@maxValue(730)
@description('Days to keep logs; 30 is included in the ingestion price.')
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

output name string = workspace.name
output id string = workspace.id
