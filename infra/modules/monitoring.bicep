// Log Analytics workspace + workspace-based Application Insights (Entra-only ingestion).
// The function app exports through OpenTelemetry: host.json telemetryMode OpenTelemetry and the app setting
// PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true (set in app/functions.bicep); with local auth disabled the
// host and the worker's exporter authenticate with the app's identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).

@description('Region of the workspace and the component.')
param location string

@description('Tags of every resource.')
param tags object

@description('Log Analytics workspace name.')
param logAnalyticsName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Days of retention (30 is included in the ingestion price).')
@minValue(30)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
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
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

output applicationInsightsName string = appInsights.name
output applicationInsightsId string = appInsights.id
output logAnalyticsId string = workspace.id
