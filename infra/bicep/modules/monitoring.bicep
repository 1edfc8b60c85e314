// Where to watch the deployment:
// - Log Analytics: every app's stdout (the gateway's one JSON routing line per request, event "request",
//   and one per failed upstream attempt, event "upstream_attempt", land in ContainerAppConsoleLogs_CL),
//   the platform's system events, and the diagnostic logs of Key Vault, PostgreSQL, the registry, Redis and
//   Azure OpenAI;
// - Application Insights (on the same workspace): the OpenTelemetry traces and metrics of the gateway and the
//   chat app (APPLICATIONINSIGHTS_CONNECTION_STRING): a span per request and per upstream attempt;
// - a workbook, "LLM gateway routing": requests, failovers and cooldowns per backend.

@description('Name of the Log Analytics workspace; the Application Insights component and workbook are named after it.')
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

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${name}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
  }
}

// The gateway's routing lines, parsed once; every query below starts from here.
var gatewayLines = 'ContainerAppConsoleLogs_CL | where ContainerAppName_s startswith "ca-gateway-" | extend line = parse_json(Log_s) | extend event = tostring(line.event), backend = tostring(line.backend)'
var queries = [
  {
    title: 'Requests per backend (the backend that answered)'
    visualization: 'timechart'
    query: '${gatewayLines} | where event == "request" | summarize requests = count() by backend, bin(TimeGenerated, 5m)'
  }
  {
    title: 'Failovers: requests that needed more than one attempt, by the backend that finally answered'
    visualization: 'timechart'
    query: '${gatewayLines} | where event == "request" and toint(line.attempts) > 1 | summarize failovers = count() by backend, bin(TimeGenerated, 5m)'
  }
  {
    title: 'Failed upstream attempts per backend and outcome (throttled, failed)'
    visualization: 'barchart'
    query: '${gatewayLines} | where event == "upstream_attempt" and tostring(line.outcome) != "ok" | summarize attempts = count() by backend, outcome = tostring(line.outcome)'
  }
  {
    title: 'Cooldowns per backend (429s honoured: how many, and seconds in total)'
    visualization: 'table'
    query: '${gatewayLines} | where event == "upstream_attempt" and isnotnull(line.cooldown_s) | summarize cooldowns = count(), cooldown_seconds = sum(todouble(line.cooldown_s)), ejections = countif(isnotnull(line.ejected_s)) by backend'
  }
  {
    title: 'Latency per backend (p50 / p95 of the whole request, ms)'
    visualization: 'table'
    query: '${gatewayLines} | where event == "request" | summarize p50 = percentile(todouble(line.duration_ms), 50), p95 = percentile(todouble(line.duration_ms), 95), requests = count() by backend'
  }
  {
    title: 'Upstream attempts from the OpenTelemetry spans (Application Insights)'
    visualization: 'barchart'
    query: 'AppDependencies | where isnotempty(tostring(Properties["gateway.backend"])) | summarize attempts = count() by backend = tostring(Properties["gateway.backend"]), outcome = tostring(Properties["gateway.outcome"])'
  }
]
var queryItems = [for q in queries: {
  type: 3
  name: q.title
  content: {
    version: 'KqlItem/1.0'
    query: q.query
    size: 0
    title: q.title
    timeContext: {
      durationMs: 86400000
    }
    queryType: 0
    resourceType: 'microsoft.operationalinsights/workspaces'
    visualization: q.visualization
  }
}]
var introItem = {
  type: 1
  name: 'intro'
  content: {
    json: '## LLM gateway routing\nFrom the gateway\'s JSON log lines (one per request, one per failed attempt) and its OpenTelemetry spans.'
  }
}
var workbook = {
  version: 'Notebook/1.0'
  items: concat([
    introItem
  ], queryItems)
  fallbackResourceIds: [
    workspace.id
  ]
}

resource routingWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspace.id, 'llm-gateway-routing')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'LLM gateway routing'
    category: 'workbook'
    sourceId: workspace.id
    serializedData: string(workbook)
  }
}

output name string = workspace.name
output id string = workspace.id
output appInsightsConnectionString string = appInsights.properties.ConnectionString
output workbookName string = routingWorkbook.properties.displayName
