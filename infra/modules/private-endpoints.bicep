// Private endpoints (main.bicep vnetEnabled) for Key Vault, the storage account's blob and queue services, the SQL
// server, every IoT hub and DPS, each registering its address in the matching private DNS zone (network.bicep)
// through a zone group. Group ids (private-link sub-resources): vault, blob, queue, sqlServer, iotHub as the Azure
// Verified Modules use them (avm/res/key-vault/vault, storage/storage-account, sql/server, devices/iot-hub); iotDps
// from azure-rest-api-specs deviceprovisioningservices .../examples/DPSGetPrivateLinkResources.json.

@description('Region of the endpoints (the virtual network\'s).')
param location string

@description('Tags of every resource.')
param tags object

@description('Name prefix of the endpoints.')
param namePrefix string

@description('Subnet of the private endpoints.')
param subnetId string

@description('Key Vault resource id.')
param keyVaultId string

@description('Storage account resource id.')
param storageAccountId string

@description('SQL logical server resource id.')
param sqlServerId string

@description('IoT hub resource ids.')
param hubIds array

@description('Each hub\'s number within its region, in hubIds order (iothubs.bicep ordinals: 1 for the first hub of a region).')
param hubOrdinals array

@description('Each hub\'s part of its resource names, in hubIds order (iothubs.bicep keys: west, west2, ...).')
param hubKeys array

@description('DPS resource id.')
param dpsId string

@description('Private DNS zone ids by sub-resource: keyVault, blob, queue, sql, iotHub, dps.')
param zoneIds object

var single = [
  {
    name: 'kv'
    serviceId: keyVaultId
    groupId: 'vault'
    zoneId: zoneIds.keyVault
  }
  {
    name: 'blob'
    serviceId: storageAccountId
    groupId: 'blob'
    zoneId: zoneIds.blob
  }
  {
    name: 'queue'
    serviceId: storageAccountId
    groupId: 'queue'
    zoneId: zoneIds.queue
  }
  {
    name: 'sql'
    serviceId: sqlServerId
    groupId: 'sqlServer'
    zoneId: zoneIds.sql
  }
  {
    name: 'dps'
    serviceId: dpsId
    groupId: 'iotDps'
    zoneId: zoneIds.dps
  }
]
// The first hub of each region keeps the endpoint name it had when there was one hub per region, iot-{its index}
// (iothubs.bicep lists the first hubs first, in region order); hub k >= 2 of a region is named by its key (iot-west2),
// so neither a higher hub count nor another region moves an existing endpoint to another hub.
var hubs = [for (hubId, i) in hubIds: {
  name: (hubOrdinals[i] > 1) ? 'iot-${hubKeys[i]}' : 'iot-${i}'
  serviceId: hubId
  groupId: 'iotHub'
  zoneId: zoneIds.iotHub
}]
var endpoints = concat(single, hubs)

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = [for item in endpoints: {
  name: '${namePrefix}-${item.name}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: '${namePrefix}-${item.name}'
        properties: {
          privateLinkServiceId: item.serviceId
          groupIds: [
            item.groupId
          ]
        }
      }
    ]
  }
}]

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (item, i) in endpoints: {
  parent: endpoint[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: item.groupId
        properties: {
          privateDnsZoneId: item.zoneId
        }
      }
    ]
  }
}]

output names array = [for (item, i) in endpoints: endpoint[i].name]
output groupIds array = [for item in endpoints: item.groupId]
