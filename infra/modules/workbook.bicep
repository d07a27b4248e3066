// The provisioning dashboard: an Azure Monitor workbook over the app's telemetry events (Application Insights),
// the storage queue metrics and the Key Vault audit log in the Log Analytics workspace (CA key operations). Queries live in infra/monitoring/queries/*.kql and read events only through
// the views of events.kql, the same text the alert rules use.

@description('Region of the workbook resource.')
param location string

@description('Tags of every resource.')
param tags object

@description('Application Insights component the queries run against.')
param applicationInsightsName string

@description('Storage account whose queue depth is charted.')
param storageAccountName string

@description('Environment name, shown in the workbook title.')
param environmentName string

@description('Regional CA names whose CRL age is shown.')
param caNames array = []

@description('A device allocated longer ago than this without a twin configuration counts as not configured.')
param notConfiguredAfterMinutes int = 10

@description('Lifetime of every CRL in hours (CRL_VALIDITY_HOURS), to turn nextUpdate into an age.')
param crlValidityHours int = 168

@description('Log Analytics workspace that receives the resource logs (the CA key operations tile reads Key Vault\'s).')
param logAnalyticsWorkspaceId string

@description('Object id of the function app identity, named as such in the CA key operations tile.')
param functionPrincipalId string = ''

@description('Event Grid system topics whose dead-lettered events are charted (the hubs\' DeviceCreated, the storage account\'s BlobCreated).')
param systemTopicNames array = []

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

var queryParameters = 'let ExpectedCAs = dynamic(${string(caNames)});\nlet NotConfiguredAfter = ${notConfiguredAfterMinutes}m;\nlet CrlValidityHours = ${crlValidityHours};\nlet FunctionPrincipalId = \'${functionPrincipalId}\';\n'
var prelude = concat(queryParameters, loadTextContent('../monitoring/queries/events.kql'))
var day = 86400000
var week = 604800000

var panels = [
  {
    name: 'provisioning-daily'
    title: 'Provisioning attempts per day: succeeded vs failed'
    query: concat(prelude, loadTextContent('../monitoring/queries/provisioning-daily.kql'))
    visualization: 'barchart'
    durationMs: week
  }
  {
    name: 'failures-by-reason'
    title: 'Failures by reason code'
    query: concat(prelude, loadTextContent('../monitoring/queries/failures-by-reason.kql'))
    visualization: 'table'
    durationMs: week
  }
  {
    name: 'allocation-latency'
    title: 'Allocation latency (ms): p50, p95, p99'
    query: concat(prelude, loadTextContent('../monitoring/queries/allocation-latency.kql'))
    visualization: 'linechart'
    durationMs: day
  }
  {
    name: 'hub-distribution'
    title: 'Allocation decisions and hub load'
    query: concat(prelude, loadTextContent('../monitoring/queries/hub-distribution.kql'))
    visualization: 'table'
    durationMs: week
  }
  {
    name: 'not-configured'
    title: 'Devices provisioned but not yet configured'
    query: concat(prelude, loadTextContent('../monitoring/queries/not-configured.kql'))
    visualization: 'table'
    durationMs: day
  }
  {
    name: 'funnel-pending-telemetry'
    title: 'Sensors provisioned but not yet transmitting (onboarding funnel)'
    query: concat(prelude, loadTextContent('../monitoring/queries/funnel-pending-telemetry.kql'))
    visualization: 'table'
    durationMs: day
  }
  {
    name: 'funnel-stuck'
    title: 'Stuck sensors by stage and facility'
    query: concat(prelude, loadTextContent('../monitoring/queries/funnel-stuck.kql'))
    visualization: 'table'
    durationMs: 2 * day
  }
  {
    name: 'funnel-power-on-to-live'
    title: 'Power-on to first telemetry (s): average and p95 per day, by step'
    query: concat(prelude, loadTextContent('../monitoring/queries/funnel-power-on-to-live.kql'))
    visualization: 'table'
    durationMs: week
  }
  {
    name: 'twin-failures'
    title: 'Twin configuration failures'
    query: concat(prelude, loadTextContent('../monitoring/queries/twin-failures.kql'))
    visualization: 'table'
    durationMs: day
  }
  {
    name: 'config-drift'
    title: 'Configuration drift: sensors whose twin differs from template (+) overrides, per facility and type'
    query: concat(prelude, loadTextContent('../monitoring/queries/config-drift.kql'))
    visualization: 'table'
    durationMs: day
  }
  {
    name: 'template-latency'
    title: 'Template retrieval latency (ms) by result'
    query: concat(prelude, loadTextContent('../monitoring/queries/template-latency.kql'))
    visualization: 'table'
    durationMs: day
  }
  {
    name: 'certificate-validation-latency'
    title: 'Certificate validation latency (ms): chain to the regional CA and CRL check, per hour'
    query: concat(prelude, loadTextContent('../monitoring/queries/certificate-validation-latency.kql'))
    visualization: 'table'
    durationMs: day
  }
  {
    name: 'certificates-by-expiry'
    title: 'Certificates by days to expiry (latest daily scan)'
    query: concat(prelude, loadTextContent('../monitoring/queries/certificates-by-expiry.kql'))
    visualization: 'table'
    durationMs: 2 * day
  }
  {
    name: 'crl-age'
    title: 'CRL age per regional CA (hours)'
    query: concat(prelude, loadTextContent('../monitoring/queries/crl-age.kql'))
    visualization: 'table'
    durationMs: 2 * day
  }
  {
    name: 'hub-capacity'
    title: 'Hub capacity per region: use, growth, days until full, hubs to add (latest daily report)'
    query: concat(prelude, loadTextContent('../monitoring/queries/hub-capacity.kql'))
    visualization: 'table'
    durationMs: 2 * day
  }
  {
    name: 'revocations'
    title: 'Revocations and revoked certificates presented'
    query: concat(prelude, loadTextContent('../monitoring/queries/revocations.kql'))
    visualization: 'table'
    durationMs: week
  }
  {
    name: 'events-overview'
    title: 'Telemetry events per day'
    query: concat(prelude, loadTextContent('../monitoring/queries/events-overview.kql'))
    visualization: 'table'
    durationMs: week
  }
  {
    name: 'run-budgets'
    title: 'Timer runs against their budgets: runs that spent theirs and left work to the next run'
    query: concat(prelude, loadTextContent('../monitoring/queries/run-budgets.kql'))
    visualization: 'table'
    durationMs: week
  }
  {
    name: 'audit-trail'
    title: 'Audit trail: latest provisioning decisions'
    query: concat(prelude, loadTextContent('../monitoring/queries/audit-trail.kql'))
    visualization: 'table'
    durationMs: day
  }
]

var queryItems = [for panel in panels: {
  type: 3
  name: panel.name
  content: {
    version: 'KqlItem/1.0'
    title: panel.title
    query: panel.query
    size: 0
    queryType: 0
    resourceType: 'microsoft.insights/components'
    crossComponentResources: [
      appInsights.id
    ]
    visualization: panel.visualization
    timeContext: {
      durationMs: panel.durationMs
    }
  }
}]

// Resource logs in the workspace (not the app's telemetry): who used the CA keys in Key Vault.
var caKeyOperationsItem = {
  type: 3
  name: 'ca-key-operations'
  content: {
    version: 'KqlItem/1.0'
    title: 'CA key operations: who signed or changed what, when (Key Vault audit log)'
    query: concat(queryParameters, loadTextContent('../monitoring/queries/resource-logs/ca-key-operations.kql'))
    size: 0
    queryType: 0
    resourceType: 'microsoft.operationalinsights/workspaces'
    crossComponentResources: [
      logAnalyticsWorkspaceId
    ]
    visualization: 'table'
    timeContext: {
      durationMs: week
    }
  }
}

// Queue depth is a storage metric (QueueMessageCount, the whole account: the metric has no per-queue dimension).
var queueDepthItem = {
  type: 10
  name: 'queue-depth'
  content: {
    version: 'MetricsItem/2.0'
    title: 'Queue depth: messages waiting in certificate-renewals, certificate-alerts, security-alerts and poison queues'
    size: 0
    chartType: 2
    resourceType: 'microsoft.storage/storageaccounts/queueservices'
    metricScope: 0
    resourceIds: [
      queueService.id
    ]
    timeContext: {
      durationMs: day
    }
    metrics: [
      {
        namespace: 'microsoft.storage/storageaccounts/queueservices'
        metric: 'microsoft.storage/storageaccounts/queueservices--QueueMessageCount'
        aggregation: 4
      }
    ]
  }
}

// Dead-lettered events are a platform metric of each system topic (DeadLetteredCount, Total, dimensions
// EventSubscriptionName and DeadLetterReason; docs/contracts.md "Event Grid delivery"): events Event Grid gave up on
// and wrote to the dead-letter container, so devices twin setup never configured or templates never rolled out.
var deadLetterItem = {
  type: 10
  name: 'dead-lettered-events'
  content: {
    version: 'MetricsItem/2.0'
    title: 'Dead-lettered Event Grid events (container eventgrid-deadletter), per system topic and reason'
    size: 0
    chartType: 2
    resourceType: 'microsoft.eventgrid/systemtopics'
    metricScope: 0
    resourceIds: [for topicName in systemTopicNames: resourceId('Microsoft.EventGrid/systemTopics', topicName)]
    timeContext: {
      durationMs: week
    }
    metrics: [
      {
        namespace: 'microsoft.eventgrid/systemtopics'
        metric: 'microsoft.eventgrid/systemtopics--DeadLetteredCount'
        aggregation: 1
        splitBy: 'DeadLetterReason'
      }
    ]
  }
}

var header = {
  type: 1
  name: 'header'
  content: {
    json: '## Sensor onboarding (${environmentName})\nProvisioning, twin configuration and certificate health from the app telemetry (Application Insights `traces`, logger `onboarding.events`).'
  }
}

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat([
    header
  ], queryItems, [
    queueDepthItem
    caKeyOperationsItem
  ], empty(systemTopicNames) ? [] : [
    deadLetterItem
  ])
  isLocked: false
  fallbackResourceIds: [
    appInsights.id
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'sensor-onboarding-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Sensor onboarding (${environmentName})'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string(workbookContent)
  }
}

output workbookId string = workbook.id
