// Zero-touch sensor onboarding: every Azure resource of the product, in one resource group.
// Subscription scope, azd conventions (abbreviations.json, resourceToken, azd tags, UPPER_CASE outputs).
// Deployed by infra/deploy.sh (az only) or `azd up` (azure.yaml); no public module registry is used.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd AZURE_ENV_NAME); feeds the resource token and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Primary Azure region of the resource group and of every regional resource without its own location.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group name; empty means rg-{environmentName}.')
param resourceGroupName string = ''

@description('Object id of the deployer (user or service principal): Entra admin of SQL and data-plane roles for the deploy script. Empty skips those roles.')
param principalId string = ''

@description('Kind of principal behind principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Display name of the SQL Entra administrator (the principal behind principalId).')
param principalName string = 'onboarding-deployer'

@description('Facility regions; hubsPerRegion IoT hubs, one intermediate CA and one DPS enrollment group per region. location empty = the primary location.')
param regions array = [
  {
    name: 'west'
    location: ''
  }
  {
    name: 'central'
    location: ''
  }
  {
    name: 'east'
    location: ''
  }
]

// One count for every region rather than a map region -> count: it binds to one azd variable (HUBS_PER_REGION) and
// one deploy.sh option like every other scalar here, takes @minValue/@maxValue, and matches the local stack's
// HUBS_PER_REGION; the webhook allocates among the hubs of a region that have room, so a region that needs fewer
// leaves hubs it does not fill (`onboarding hubs set HOST --accepting false` keeps them out of allocation).
// At most 16: DPS links at most 50 hubs (a limit that cannot be raised) and a subscription holds 50 IoT hubs by
// default, so 16 for the default three regions; keep length(regions) * hubsPerRegion within both.
@description('IoT hubs per facility region. Raising it adds hubs and changes none: the first hub of a region keeps the name {prefix}{region}-{token}, hub k >= 2 is {prefix}{region}{k}-{token}; DPS links, role assignments, Event Grid subscriptions, alerts, app settings and (deploy.sh) iot_hubs rows cover every hub. Lowering it removes no hub (incremental deployment) but drops the hubs above the count from DPS and the app settings.')
@minValue(1)
@maxValue(16)
param hubsPerRegion int = 1

@description('IoT Hub SKU of every regional hub (S1 and up: the product needs device twins and Event Grid).')
@allowed([
  'S1'
  'S2'
  'S3'
])
param iotHubSku string = 'S1'

@description('IoT Hub units per regional hub (S1: 400,000 messages a day per unit).')
@minValue(1)
param iotHubUnits int = 1

@description('Azure SQL database SKU. Avoid serverless auto-pause: a paused database makes the DPS webhook miss its deadline.')
param sqlDatabaseSku string = 'S0'

@description('Always-ready instances of the HTTP group (the DPS webhook and the certificate endpoints): no cold start on the allocation path.')
@minValue(0)
param alwaysReadyInstances int = 1

@description('Upper bound of Flex Consumption instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory per Flex Consumption instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Grant IoT Hub Data Contributor (needed to apply edge deployments to gateways) instead of Data Reader + Twin Contributor.')
param enableEdgeDeployments bool = true

@description('Create the DeviceCreated Event Grid subscriptions. The function endpoint must exist first, so deploy.sh sets this after publishing the code.')
param subscribeDeviceCreated bool = false

@description('Create Azure Communication Services e-mail (Azure-managed domain) for certificate alerts.')
param enableEmail bool = false

@description('Data location of Communication Services, when enabled.')
param emailDataLocation string = 'United States'

@description('E-mail address that receives the Azure Monitor alerts; empty creates the alert rules without a notification.')
param alertEmail string = ''

@description('Address that also receives critical and expired certificate digests (CERT_ESCALATION_EMAIL); empty for none.')
param escalationEmail string = ''

@description('Base URL of the CRLs and CA certificates written into every certificate issued (CRL_DISTRIBUTION_URL): {url}/{ca}.crl. Empty = the crl container of the storage account, which only the app identity can read; relying parties other than the webhook need a public endpoint (docs/deployment.md). Certificates keep it for life: decide before issuing at scale.')
param crlDistributionUrl string = ''

@description('Lifetime of every CRL in hours (CRL_VALIDITY_HOURS).')
param crlValidityHours int = 168

@description('The CRL refresh timer (every 6 hours) re-issues a CRL when less than this many hours remain (CRL_REFRESH_BEFORE_HOURS).')
param crlRefreshBeforeHours int = 96

@description('App setting values that replace the defaults below (tuning without editing the template).')
param appSettingOverrides object = {}

@description('Client ID of the onboarding API\'s Entra app registration (the audience of partner tokens; docs/partners.md). Created as a deployment step: Bicep cannot create Entra applications without the Microsoft Graph extension.')
param partnerApiClientId string = ''

@description('Private networking: a virtual network, Flex Consumption VNet integration, private endpoints and private DNS zones for Key Vault, Storage (blob, queue), SQL, the IoT hubs and DPS; Key Vault and SQL take no public traffic and SQL has no firewall rule, Storage takes only trusted Azure services (Event Grid dead letters). The data-plane steps of deploy.sh then run from a machine in the network. Off for a first deployment.')
param vnetEnabled bool = false

@description('With vnetEnabled: the IoT hubs and DPS still accept devices on their public endpoints (devices on the internet). False when every device reaches the virtual network (VPN, ExpressRoute): hubs and DPS then take private endpoint traffic only.')
param devicePublicNetworkAccess bool = true

@description('Without vnetEnabled: the SQL firewall rule "Allow Azure services and resources to access this server" (0.0.0.0), which the function app needs to reach SQL without a virtual network. Never created with vnetEnabled.')
param sqlAllowAzureServices bool = true

@description('Address space of the virtual network (vnetEnabled).')
param vnetAddressPrefix string = '10.40.0.0/16'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
var regionNames = [for region in regions: region.name]
var caNames = [for region in regions: 'intermediate-ca-${region.name}']
var regionalCas = [for region in regions: '${region.name}=intermediate-ca-${region.name}']
var hubsPublic = (!vnetEnabled) || devicePublicNetworkAccess

// Names the code uses (local/seed/data.py, shared/config.py); tests/infra checks them against the code.
var templatesContainer = 'sensor-configurations'
var configurationsContainer = 'device-configurations'
var deadLetterContainer = 'eventgrid-deadletter'
var crlContainer = 'crl'
var deploymentContainer = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var queueNames = [
  'certificate-renewals'
  'certificate-renewals-poison'
  'certificate-alerts'
  'security-alerts'
  'config-rollouts'
  'config-rollouts-poison'
]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: (!empty(resourceGroupName)) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    containerNames: [
      templatesContainer
      configurationsContainer
      deadLetterContainer
      deploymentContainer
      crlContainer
    ]
    queueNames: queueNames
    privateOnly: vnetEnabled
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    privateOnly: vnetEnabled
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module sql 'modules/sql.bicep' = {
  name: 'sql'
  scope: rg
  params: {
    location: location
    tags: tags
    serverName: '${abbrs.sqlServers}${resourceToken}'
    databaseName: '${abbrs.sqlServersDatabases}onboarding'
    databaseSku: sqlDatabaseSku
    adminObjectId: principalId
    adminLogin: principalName
    adminPrincipalType: principalType
    privateOnly: vnetEnabled
    allowAzureServices: sqlAllowAzureServices
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module hubs 'modules/iothubs.bicep' = {
  name: 'iothubs'
  scope: rg
  params: {
    location: location
    tags: tags
    regions: regions
    hubsPerRegion: hubsPerRegion
    namePrefix: abbrs.devicesIotHubs
    systemTopicPrefix: abbrs.eventGridSystemTopics
    resourceToken: resourceToken
    sku: iotHubSku
    units: iotHubUnits
    publicNetworkAccess: hubsPublic
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module dps 'modules/dps.bicep' = {
  name: 'dps'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.devicesProvisioningServices}${resourceToken}'
    hubNames: hubs.outputs.names
    hubLocations: hubs.outputs.locations
    publicNetworkAccess: hubsPublic
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module network 'modules/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: cidrSubnet(vnetAddressPrefix, 24, 0)
    privateEndpointSubnetPrefix: cidrSubnet(vnetAddressPrefix, 24, 1)
  }
}

module privateEndpoints 'modules/private-endpoints.bicep' = if (vnetEnabled) {
  name: 'private-endpoints'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: '${abbrs.networkPrivateEndpoints}${resourceToken}'
    subnetId: vnetEnabled ? network.outputs.privateEndpointSubnetId : ''
    keyVaultId: keyVault.outputs.id
    storageAccountId: storage.outputs.id
    sqlServerId: sql.outputs.serverId
    hubIds: hubs.outputs.ids
    hubOrdinals: hubs.outputs.ordinals
    hubKeys: hubs.outputs.keys
    dpsId: dps.outputs.id
    zoneIds: vnetEnabled ? {
      keyVault: network.outputs.keyVaultZoneId
      blob: network.outputs.blobZoneId
      queue: network.outputs.queueZoneId
      sql: network.outputs.sqlZoneId
      iotHub: network.outputs.iotHubZoneId
      dps: network.outputs.dpsZoneId
    } : {}
  }
}

module email 'modules/communication.bicep' = if (enableEmail) {
  name: 'communication'
  scope: rg
  params: {
    tags: tags
    communicationServiceName: '${abbrs.communicationCommunicationServices}${resourceToken}'
    emailServiceName: '${abbrs.communicationEmailServices}${resourceToken}'
    dataLocation: emailDataLocation
  }
}

module functionApp 'app/functions.bicep' = {
  name: 'functions'
  scope: rg
  params: {
    location: location
    tags: tags
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainer
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    alwaysReadyInstances: alwaysReadyInstances
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    sqlServerFqdn: sql.outputs.serverFqdn
    sqlDatabaseName: sql.outputs.databaseName
    keyVaultUrl: keyVault.outputs.vaultUri
    regionNames: regionNames
    hubNames: hubs.outputs.names
    hubHostNames: hubs.outputs.hostNames
    templatesContainer: templatesContainer
    configurationsContainer: configurationsContainer
    securityAlertsQueue: 'security-alerts'
    emailEndpoint: enableEmail ? email.outputs.endpoint : ''
    emailSender: enableEmail ? email.outputs.senderAddress : ''
    escalationEmail: escalationEmail
    crlContainer: crlContainer
    crlDistributionUrl: crlDistributionUrl
    dpsServiceHostName: dps.outputs.serviceHostName
    crlValidityHours: crlValidityHours
    crlRefreshBeforeHours: crlRefreshBeforeHours
    appSettingOverrides: appSettingOverrides
    partnerApiClientId: partnerApiClientId
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
  // The private endpoints and their DNS records exist before the app starts resolving the services through the VNet.
  dependsOn: [
    privateEndpoints
  ]
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    functionPrincipalId: functionApp.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    hubNames: hubs.outputs.names
    systemTopicPrincipalIds: hubs.outputs.systemTopicPrincipalIds
    deadLetterContainerName: deadLetterContainer
    crlContainerName: crlContainer
    dpsName: dps.outputs.name
    enableEdgeDeployments: enableEdgeDeployments
    communicationServiceName: enableEmail ? email.outputs.name : ''
  }
}

module deviceEvents 'modules/device-events.bicep' = if (subscribeDeviceCreated) {
  name: 'device-events'
  scope: rg
  params: {
    systemTopicNames: hubs.outputs.systemTopicNames
    functionAppName: functionApp.outputs.name
    functionName: 'on_device_created'
    storageAccountName: storage.outputs.name
    deadLetterContainerName: deadLetterContainer
  }
  dependsOn: [
    rbac
  ]
}

// Template uploads start configuration rollouts (README "Configuration changes"); deployed with the DeviceCreated
// subscription, once the function code exists.
module templateEvents 'modules/templates-events.bicep' = if (subscribeDeviceCreated) {
  name: 'templates-events'
  scope: rg
  params: {
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    templatesContainerName: templatesContainer
    functionAppName: functionApp.outputs.name
    deadLetterContainerName: deadLetterContainer
  }
  dependsOn: [
    rbac
  ]
}

// Every system topic that dead-letters (alerts and the workbook watch DeadLetteredCount): the hubs', and the storage
// account's once the template subscription is deployed.
var eventSystemTopicNames = concat(hubs.outputs.systemTopicNames, subscribeDeviceCreated ? [
  templateEvents.outputs.systemTopicName
] : [])

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    storageAccountName: storage.outputs.name
    environmentName: environmentName
    caNames: caNames
    crlValidityHours: crlValidityHours
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
    functionPrincipalId: functionApp.outputs.principalId
    systemTopicNames: eventSystemTopicNames
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    alertRulePrefix: '${abbrs.insightsScheduledQueryRules}${resourceToken}'
    alertEmail: alertEmail
    caNames: caNames
    crlValidityHours: crlValidityHours
    crlRefreshBeforeHours: crlRefreshBeforeHours
    hubNames: hubs.outputs.names
    systemTopicNames: eventSystemTopicNames
    dpsName: dps.outputs.name
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_ONBOARDING_BASE_URL string = functionApp.outputs.baseUrl
output FUNCTION_PRINCIPAL_ID string = functionApp.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output TEMPLATES_CONTAINER string = templatesContainer
output CRL_CONTAINER string = crlContainer
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URL string = keyVault.outputs.vaultUri
output AZURE_SQL_SERVER_NAME string = sql.outputs.serverName
output AZURE_SQL_SERVER_FQDN string = sql.outputs.serverFqdn
output AZURE_SQL_DATABASE_NAME string = sql.outputs.databaseName
output AZURE_DPS_NAME string = dps.outputs.name
output AZURE_DPS_ID_SCOPE string = dps.outputs.idScope
output AZURE_DPS_ENDPOINT string = dps.outputs.deviceEndpoint
output REGIONS string = join(regionNames, ',')
output REGIONAL_CAS string = join(regionalCas, ',')
output IOT_HUB_NAMES string = join(hubs.outputs.names, ',')
output IOT_HUB_HOSTNAMES string = join(hubs.outputs.hostNames, ',')
// host=region for every hub (deploy.sh: the region of each hub's iot_hubs row, whatever the hubs' order).
output IOT_HUB_REGIONS string = join(map(range(0, length(hubs.outputs.hostNames)), i => '${hubs.outputs.hostNames[i]}=${hubs.outputs.hubRegions[i]}'), ',')
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output DEVICE_CREATED_SUBSCRIBED bool = subscribeDeviceCreated
output VNET_ENABLED bool = vnetEnabled
output AZURE_VNET_NAME string = vnetEnabled ? network.outputs.name : ''
