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

@description('Accept connections on the public endpoint. False only with private networking and devices that reach the VNet (VPN, ExpressRoute): devices on the internet register through the public device endpoint.')
param publicNetworkAccess bool = true

@description('Log Analytics workspace of the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource hub 'Microsoft.Devices/IotHubs@2023-06-30' existing = [for hubName in hubNames: {
  name: hubName
}]

// 2022-12-12 is the latest stable API of Microsoft.Devices/provisioningServices (azure-rest-api-specs,
// specification/deviceprovisioningservices/resource-manager/Microsoft.Devices/stable/2022-12-12/iotdps.json); its
// IotDpsPropertiesDescription has the same iotHubs (connectionString, location) and publicNetworkAccess as 2022-02-05.
resource dps 'Microsoft.Devices/provisioningServices@2022-12-12' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'S1'
    capacity: 1
  }
  properties: {
    publicNetworkAccess: publicNetworkAccess ? 'Enabled' : 'Disabled'
    iotHubs: [for (hubName, i) in hubNames: {
      connectionString: 'HostName=${hub[i].properties.hostName};SharedAccessKeyName=${hubPolicyName};SharedAccessKey=${listKeys(resourceId('Microsoft.Devices/IotHubs/IotHubKeys', hubName, hubPolicyName), '2023-06-30').primaryKey}'
      location: hubLocations[i]
    }]
  }
}

// DPS resource logs (categories DeviceOperations and ServiceOperations, AzureDiagnostics: "Supported logs for
// Microsoft.Devices/provisioningServices") and metrics (RegistrationAttempts, AttestationAttempts, DeviceAssignments).
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: dps
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'DeviceOperations'
        enabled: true
      }
      {
        category: 'ServiceOperations'
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
}

output id string = dps.id
output name string = dps.name
output idScope string = dps.properties.idScope
output deviceEndpoint string = dps.properties.deviceProvisioningHostName
// The service API's host ({name}.azure-devices-provisioning.net): the app manages individual enrollments there.
output serviceHostName string = dps.properties.serviceOperationsHostName
