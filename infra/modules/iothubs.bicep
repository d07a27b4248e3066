// One IoT hub per facility region, each with an Event Grid system topic (the source of DeviceCreated events).
// Devices authenticate with X.509 only (device and module SAS disabled). Service-side shared access is kept
// for one policy, `provisioningservice`, because DPS links hubs by connection string in its GA API; the
// function app itself uses Entra ID (rbac.bicep) and never sees a key. That policy has RegistryWrite (DPS creates
// the device identity) and ServiceConnect, not DeviceConnect: DPS never connects as a device.

@description('Primary region (used for hubs whose region entry has no location).')
param location string

@description('Tags of every resource.')
param tags object

@description('Facility regions: [{ name, location }].')
param regions array

@description('Name prefix of the hubs (abbreviations.json devicesIotHubs).')
param namePrefix string

@description('Name prefix of the system topics (abbreviations.json eventGridSystemTopics).')
param systemTopicPrefix string

@description('Unique suffix of the environment.')
param resourceToken string

@description('Hub SKU.')
param sku string = 'S1'

@description('Units per hub.')
@minValue(1)
param units int = 1

@description('Accept connections on the public endpoint. False only with private networking and devices that reach the VNet (VPN, ExpressRoute): devices on the internet connect to the public endpoint.')
param publicNetworkAccess bool = true

@description('Log Analytics workspace of the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource hub 'Microsoft.Devices/IotHubs@2023-06-30' = [for region in regions: {
  name: '${namePrefix}${region.name}-${resourceToken}'
  location: empty(region.location) ? location : region.location
  tags: union(tags, {
    'onboarding-region': region.name
  })
  sku: {
    name: sku
    capacity: units
  }
  properties: {
    minTlsVersion: '1.2'
    disableDeviceSAS: true
    disableModuleSAS: true
    disableLocalAuth: false
    publicNetworkAccess: publicNetworkAccess ? 'Enabled' : 'Disabled'
    authorizationPolicies: [
      {
        keyName: 'provisioningservice'
        rights: 'RegistryWrite, ServiceConnect'
      }
    ]
    eventHubEndpoints: {
      events: {
        retentionTimeInDays: 1
        partitionCount: 4
      }
    }
  }
}]

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = [for (region, i) in regions: {
  name: '${systemTopicPrefix}${region.name}-${resourceToken}'
  location: empty(region.location) ? location : region.location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: hub[i].id
    topicType: 'Microsoft.Devices.IoTHubs'
  }
}]

// IoT Hub resource logs go to AzureDiagnostics ("Supported logs for Microsoft.Devices/IotHubs"): connections,
// device identity and twin operations, and the rest; categoryGroup allLogs as the Azure Verified Module
// avm/res/devices/iot-hub sets by default.
resource hubDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = [for (region, i) in regions: {
  name: 'to-log-analytics'
  scope: hub[i]
  properties: {
    workspaceId: logAnalyticsWorkspaceId
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
}]

// System topic delivery failures (category DeliveryFailures, table AegDeliveryFailureLogs: "Supported logs for
// Microsoft.EventGrid/systemTopics"), with the DeadLetteredCount and DroppedEventCount metrics.
resource topicDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = [for (region, i) in regions: {
  name: 'to-log-analytics'
  scope: systemTopic[i]
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'DeliveryFailures'
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
}]

output ids array = [for (region, i) in regions: hub[i].id]
output systemTopicIds array = [for (region, i) in regions: systemTopic[i].id]
output names array = [for (region, i) in regions: hub[i].name]
output hostNames array = [for (region, i) in regions: hub[i].properties.hostName]
output locations array = [for (region, i) in regions: hub[i].location]
output systemTopicNames array = [for (region, i) in regions: systemTopic[i].name]
output systemTopicPrincipalIds array = [for (region, i) in regions: systemTopic[i].identity.principalId]
