// Private networking (main.bicep vnetEnabled): one virtual network with a subnet for the function app's Flex
// Consumption VNet integration and a subnet for private endpoints, and the private DNS zones those endpoints
// register in, each linked to the network so the app resolves the services' usual host names to private addresses.
// Layout as in the azd template functions-quickstart-python-http-azd (infra/app/vnet.bicep): the app subnet
// delegated to Microsoft.App/environments, private endpoint network policies off on the endpoint subnet.
// Zone names: the Azure Verified Module avm/ptn/network/private-link-private-dns-zones and "Azure Private Endpoint
// private DNS zone values" (Microsoft Learn); the DPS zone also in azure-rest-api-specs
// deviceprovisioningservices .../stable/2020-03-01/examples/DPSGetPrivateLinkResources.json (requiredZoneNames).

@description('Region of the virtual network.')
param location string

@description('Tags of every resource.')
param tags object

@description('Virtual network name.')
param name string

@description('Address space of the virtual network.')
param addressPrefix string = '10.40.0.0/16'

@description('Subnet of the Flex Consumption VNet integration (a /24 leaves room for scale-out).')
param appSubnetPrefix string = '10.40.0.0/24'

@description('Subnet of the private endpoints.')
param privateEndpointSubnetPrefix string = '10.40.1.0/24'

// One zone per private-link sub-resource the product uses. Storage: blob and queue only (the app and the Functions
// host use no table or file service). IoT Hub: privatelink.azure-devices.net for the hub's own endpoint; the
// built-in Event Hubs-compatible endpoint (privatelink.servicebus.windows.net) is not used by this product.
var zoneNames = [
  'privatelink.vaultcore.azure.net'
  'privatelink.blob.${environment().suffixes.storage}'
  'privatelink.queue.${environment().suffixes.storage}'
  'privatelink${environment().suffixes.sqlServerHostname}'
  'privatelink.azure-devices.net'
  'privatelink.azure-devices-provisioning.net'
]

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zoneName in zoneNames: {
  name: zoneName
  location: 'global'
  tags: tags
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (zoneName, i) in zoneNames: {
  parent: zones[i]
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

output name string = vnet.name
output appSubnetId string = '${vnet.id}/subnets/app'
output privateEndpointSubnetId string = '${vnet.id}/subnets/private-endpoints'
output keyVaultZoneId string = zones[0].id
output blobZoneId string = zones[1].id
output queueZoneId string = zones[2].id
output sqlZoneId string = zones[3].id
output iotHubZoneId string = zones[4].id
output dpsZoneId string = zones[5].id
