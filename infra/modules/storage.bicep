// One StorageV2 account: host storage (identity-based AzureWebJobsStorage), the Flex deployment container,
// the sensor configuration templates and oversized device configurations, the Event Grid dead-letter container
// and the certificate/security queues. Shared keys and anonymous blob access are off.

@description('Region of the account.')
param location string

@description('Tags of every resource.')
param tags object

@minLength(3)
@maxLength(24)
@description('Storage account name (globally unique).')
param name string

@description('Blob containers to create.')
param containerNames array

@description('Queues to create (the Functions host creates the {queue}-poison queues itself).')
param queueNames array

@description('Private networking (main.bicep vnetEnabled): clients reach the account through its private endpoints only. The public endpoint stays on for trusted Azure services alone (defaultAction Deny, no IP or network rule, bypass AzureServices), because Event Grid dead-letters through it with the system topic identity and cannot use a private endpoint.')
param privateOnly bool = false

@description('Log Analytics workspace of the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Sensors read their offloaded configuration through a user delegation SAS (twin_setup/offload.py): authorized
    // by Microsoft Entra ID, it keeps working with Shared Key disallowed (Microsoft Learn "Prevent Shared Key
    // authorization for an Azure Storage account", table "How disallowing Shared Key affects SAS tokens"). A SAS
    // does not pass the firewall: with privateOnly, sensors need a network path to the account (see README).
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    // Event Grid "Event delivery with a managed identity", section Private endpoints: delivery (and dead-lettering)
    // cannot use a private endpoint; to a storage account behind its firewall it works with the topic's
    // system-assigned identity when "Allow Azure services on the trusted services list" is on.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: privateOnly ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
      ipRules: []
      virtualNetworkRules: []
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

// Storage resource logs are per service (blobServices/default, queueServices/default) and land in StorageBlobLogs
// and StorageQueueLogs; categories StorageRead, StorageWrite, StorageDelete, metric category Transaction ("Supported
// logs for Microsoft.Storage/storageAccounts/blobServices" and ".../queueServices"). No table service: the app and
// the Functions host use blob and queue only.
var storageLogs = [
  {
    category: 'StorageRead'
    enabled: true
  }
  {
    category: 'StorageWrite'
    enabled: true
  }
  {
    category: 'StorageDelete'
    enabled: true
  }
]

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: storageLogs
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: storageLogs
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output queueServiceId string = queueService.id
