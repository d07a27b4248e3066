// hubsPerRegion IoT hubs per facility region, each with an Event Grid system topic (the source of DeviceCreated
// events).
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

@description('IoT hubs per facility region (main.bicep hubsPerRegion). The first hub of a region is named {namePrefix}{region}-{token}, hub k >= 2 {namePrefix}{region}{k}-{token}.')
@minValue(1)
@maxValue(16)
param hubsPerRegion int = 1

// The hubs in hub-major order: hub n is hub n / R + 1 of region n % R, for R regions. The first R are the hubs the
// template made before it took a count, in the same order, with the same names, locations and tags (and system
// topics), so raising the count adds hubs and changes none; whatever is named by position downstream (the private
// endpoints of the first hubs) stays on its hub. key: the hub's part of its resource names, the region's name for
// the first hub of a region (as before) and the region's name and k for hub k >= 2 (west2, west3, ...), as the local
// stack names its hub emulators (iothub-{region}{k}-local).
var regionCount = length(regions)
var hubs = [for n in range(0, regionCount * hubsPerRegion): {
  region: regions[n % regionCount].name
  location: empty(regions[n % regionCount].location) ? location : (regions[n % regionCount].location)
  ordinal: (n / regionCount) + 1
  key: (n < regionCount) ? regions[n % regionCount].name : '${regions[n % regionCount].name}${(n / regionCount) + 1}'
}]

resource hub 'Microsoft.Devices/IotHubs@2023-06-30' = [for item in hubs: {
  name: '${namePrefix}${item.key}-${resourceToken}'
  location: item.location
  tags: union(tags, {
    'onboarding-region': item.region
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

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = [for (item, i) in hubs: {
  name: '${systemTopicPrefix}${item.key}-${resourceToken}'
  location: item.location
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
resource hubDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = [for (item, i) in hubs: {
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
resource topicDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = [for (item, i) in hubs: {
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

output ids array = [for (item, i) in hubs: hub[i].id]
output systemTopicIds array = [for (item, i) in hubs: systemTopic[i].id]
output names array = [for (item, i) in hubs: hub[i].name]
output hostNames array = [for (item, i) in hubs: hub[i].properties.hostName]
output locations array = [for (item, i) in hubs: hub[i].location]
// The facility region of each hub, in hub order (main.bicep IOT_HUB_REGIONS: deploy.sh writes each hub's iot_hubs row
// with it).
output hubRegions array = [for item in hubs: item.region]
// 1 for the first hub of its region, k for hub k; and the hub's part of its names (west, west2, ...).
output ordinals array = [for item in hubs: item.ordinal]
output keys array = [for item in hubs: item.key]
output systemTopicNames array = [for (item, i) in hubs: systemTopic[i].name]
output systemTopicPrincipalIds array = [for (item, i) in hubs: systemTopic[i].identity.principalId]
