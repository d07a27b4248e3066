// Azure SQL with Microsoft Entra-only authentication: no SQL logins, no passwords anywhere. The deployer is
// the Entra administrator; deploy.sh creates the function app's database user (FROM EXTERNAL PROVIDER) and
// applies infra/sql/schema.sql.

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

resource server 'Microsoft.Sql/servers@2023-08-01-preview' = {
  name: serverName
  location: location
  tags: tags
  properties: {
    minimalTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
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
resource allowAzure 'Microsoft.Sql/servers/firewallRules@2023-08-01-preview' = {
  parent: server
  name: 'AllowAllWindowsAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

resource database 'Microsoft.Sql/servers/databases@2023-08-01-preview' = {
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

output serverName string = server.name
output serverFqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
