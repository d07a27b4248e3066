// Azure SQL with Microsoft Entra-only authentication: no SQL logins, no passwords anywhere. The deployer is
// the Entra administrator; deploy.sh creates the function app's database user (FROM EXTERNAL PROVIDER) and
// applies the migrations of infra/sql/migrations.

@description('Region of the server.')
param location string

@description('Tags of every resource.')
param tags object

@description('Logical server name (globally unique).')
param serverName string

@description('Database name.')
param databaseName string

@description('Database SKU name (S0 = Standard 10 DTU).')
param databaseSku string = 'S0'

@description('Object id of the Entra administrator (the deployer).')
param adminObjectId string

@description('Display name of the Entra administrator.')
param adminLogin string

@description('User, Group or ServicePrincipal.')
param adminPrincipalType string = 'User'

@description('Private networking (main.bicep vnetEnabled): public network access Disabled, only the private endpoint; no firewall rule at all.')
param privateOnly bool = false

@description('Without private networking: the firewall rule 0.0.0.0-0.0.0.0 ("Allow Azure services and resources to access this server"), which the Flex Consumption app needs without a virtual network (no fixed outbound addresses). It admits every Azure tenant\'s resources to the login prompt (Entra-only authentication still applies).')
param allowAzureServices bool = true

@description('Log Analytics workspace of the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource server 'Microsoft.Sql/servers@2023-08-01' = {
  name: serverName
  location: location
  tags: tags
  properties: {
    minimalTlsVersion: '1.2'
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    administrators: {
      administratorType: 'ActiveDirectory'
      azureADOnlyAuthentication: true
      login: adminLogin
      sid: adminObjectId
      tenantId: subscription().tenantId
      principalType: (adminPrincipalType == 'ServicePrincipal') ? 'Application' : adminPrincipalType
    }
  }
}

// 0.0.0.0 - 0.0.0.0 is the documented "allow Azure services" rule: the Flex Consumption app has no fixed
// outbound addresses without a virtual network. deploy.sh adds the deployer's own address for the schema step.
// Never with private networking (public network access is Disabled there, and the app comes through the VNet).
resource allowAzure 'Microsoft.Sql/servers/firewallRules@2023-08-01' = if (allowAzureServices && !privateOnly) {
  parent: server
  name: 'AllowAllWindowsAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

resource database 'Microsoft.Sql/servers/databases@2023-08-01' = {
  parent: server
  name: databaseName
  location: location
  tags: tags
  sku: {
    name: databaseSku
  }
  properties: {
    collation: 'SQL_Latin1_General_CP1_CI_AS'
    zoneRedundant: false
  }
}

// Database resource logs ("Supported logs for Microsoft.Sql/servers/databases"; AzureDiagnostics): the ones an
// operator of the webhook needs (failed statements, timeouts, blocking, deadlocks) rather than every category.
var databaseLogCategories = [
  'Errors'
  'Timeouts'
  'Blocks'
  'Deadlocks'
]

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: database
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [for category in databaseLogCategories: {
      category: category
      enabled: true
    }]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output serverName string = server.name
output serverId string = server.id
output serverFqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
