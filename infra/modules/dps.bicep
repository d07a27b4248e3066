// Device Provisioning Service with every regional hub linked. Allocation is custom (the webhook) and is set on
// the enrollment groups, which ARM cannot create: deploy.sh creates them with `az iot dps enrollment-group
// create`. The hub connection strings are read with listKeys inside this deployment and never leave it.

@description('Region of the DPS instance.')
param location string

@description('Tags of every resource.')
param tags object

@description('DPS name (globally unique).')
param name string

@description('Names of the hubs to link.')
param hubNames array

@description('Locations of the hubs, in the same order.')
param hubLocations array

@description('Shared access policy of each hub that DPS uses (iothubs.bicep creates it).')
param hubPolicyName string = 'provisioningservice'

resource hub 'Microsoft.Devices/IotHubs@2023-06-30' existing = [for hubName in hubNames: {
  name: hubName
}]

resource dps 'Microsoft.Devices/provisioningServices@2022-02-05' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'S1'
    capacity: 1
  }
  properties: {
    publicNetworkAccess: 'Enabled'
    iotHubs: [for (hubName, i) in hubNames: {
      connectionString: 'HostName=${hub[i].properties.hostName};SharedAccessKeyName=${hubPolicyName};SharedAccessKey=${listKeys(resourceId('Microsoft.Devices/IotHubs/IotHubKeys', hubName, hubPolicyName), '2023-06-30').primaryKey}'
      location: hubLocations[i]
    }]
  }
}

output name string = dps.name
output idScope string = dps.properties.idScope
output deviceEndpoint string = dps.properties.deviceProvisioningHostName
