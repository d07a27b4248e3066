// The function app (azd service `onboarding`): Linux, Python 3.11, Flex Consumption with always-ready HTTP
// instances so the DPS webhook (allocate) never waits for a cold start; system-assigned identity for every
// dependency (identity-based AzureWebJobsStorage, Key Vault, SQL, IoT Hub, DPS, Application Insights); app settings
// hold names and URLs only, never a secret. Flex Consumption refuses FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION and WEBSITE_RUN_FROM_PACKAGE: the runtime lives in functionAppConfig.

@description('Region of the plan and the app.')
param location string

@description('Tags of every resource.')
param tags object

@description('Function app name (globally unique: {name}.azurewebsites.net).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Storage account for host storage and the deployment package.')
param storageAccountName string

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Application Insights component.')
param applicationInsightsName string

@description('Always-ready instances of the HTTP trigger group.')
@minValue(0)
param alwaysReadyInstances int = 1

@description('Maximum instances.')
param maximumInstanceCount int = 100

@description('Instance memory.')
param instanceMemoryMB int = 2048

@description('Azure SQL server FQDN.')
param sqlServerFqdn string

@description('Azure SQL database name.')
param sqlDatabaseName string

@description('Key Vault URI (https://{vault}.vault.azure.net/).')
param keyVaultUrl string

@description('Facility regions, in hub order.')
param regionNames array

@description('IoT hub names, in region order (Event Grid events carry the hub name).')
param hubNames array

@description('IoT hub host names, in region order.')
param hubHostNames array

@description('Blob container of the sensor configuration templates.')
param templatesContainer string

@description('Blob container of oversized device configurations.')
param configurationsContainer string

@description('Queue of security alerts (revoked certificate presented, revocations).')
param securityAlertsQueue string

@description('Communication Services endpoint for certificate alert e-mail; empty disables e-mail.')
param emailEndpoint string = ''

@description('Sender address of certificate alert e-mail.')
param emailSender string = ''

@description('Address that also receives critical and expired certificate digests; empty for none.')
param escalationEmail string = ''

@description('Blob container of the CRLs and the CA certificates (the publisher writes {ca}.crl there; the webhook reads it).')
param crlContainer string = 'crl'

@description('Base URL written into every certificate issued (CRL Distribution Points {url}/{ca}.crl, Authority Information Access); empty = the container in the storage account, {blob endpoint}crl, which answers only authenticated requests (the app identity). Relying parties other than the webhook need a public endpoint here (docs/deployment.md, CRL distribution point): set it before certificates are issued at scale, certificates keep it for life.')
param crlDistributionUrl string = ''

@description('DPS service operations host name ({dps}.azure-devices-provisioning.net): the app disallows a device revoked for cause there (disabled individual enrollment), with its identity.')
param dpsServiceHostName string

@description('Client ID of the onboarding API\'s Entra app registration: the audience of the partners\' access tokens (docs/partners.md). Empty: POST /api/certificates/sign refuses every request (configuration_error) until it is set.')
param partnerApiClientId string = ''

@description('Lifetime of every CRL (nextUpdate - thisUpdate), hours.')
param crlValidityHours int = 168

@description('The CRL refresh timer re-issues a CRL when less than this many hours remain before nextUpdate.')
param crlRefreshBeforeHours int = 96

@description('Values that replace the defaults of productSettings.')
param appSettingOverrides object = {}

@description('Subnet for Flex Consumption virtual network integration (delegated to Microsoft.App/environments); empty for none. With it the app reaches Key Vault, Storage, SQL and the hubs through their private endpoints.')
param virtualNetworkSubnetId string = ''

@description('Log Analytics workspace of the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'onboarding'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Flex Consumption virtual network integration, as the azd template functions-quickstart-python-http-azd
    // (VNET_ENABLED) sets it: the site's virtualNetworkSubnetId, the subnet delegated to Microsoft.App/environments.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: (alwaysReadyInstances > 0) ? [
          {
            name: 'http'
            instanceCount: alwaysReadyInstances
          }
        ] : []
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No FTP or basic-auth SCM publishing: code is published with Entra credentials (az functionapp deployment).
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// Settings of the Functions host and the Python worker (not read by the product code).
var platformSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
}

// Every setting the product code reads (shared/config.py, twin_setup/settings.py, cert_lifecycle/...).
// tests/infra/test_settings.py discovers the settings from the code and fails when the two sets differ.
var productSettings = {
  USE_MANAGED_IDENTITY: 'true'
  SQL_CONNECTION_STRING: 'Driver={ODBC Driver 18 for SQL Server};Server=tcp:${sqlServerFqdn},1433;Database=${sqlDatabaseName};Encrypt=yes;TrustServerCertificate=no;Connection Timeout=30;Authentication=ActiveDirectoryMsi'
  STORAGE_BLOB_URI: storage.properties.primaryEndpoints.blob
  STORAGE_QUEUE_URI: storage.properties.primaryEndpoints.queue
  TEMPLATES_CONTAINER: templatesContainer
  DEVICE_CONFIGURATIONS_CONTAINER: configurationsContainer
  SECURITY_ALERTS_QUEUE: securityAlertsQueue
  KEY_VAULT_URL: keyVaultUrl
  KEY_VAULT_VERIFY_CHALLENGE_RESOURCE: 'true'
  REGIONAL_CAS: join(map(regionNames, region => '${region}=intermediate-ca-${region}'), ',')
  CRL_CONTAINER: crlContainer
  CRL_DISTRIBUTION_URL: empty(crlDistributionUrl) ? '${storage.properties.primaryEndpoints.blob}${crlContainer}' : crlDistributionUrl
  DPS_SERVICE_HOSTNAME: dpsServiceHostName
  IOT_HUB_HOSTNAMES: join(hubHostNames, ',')
  IOT_HUB_NAMES: join(map(range(0, length(hubNames)), i => '${hubNames[i]}=${hubHostNames[i]}'), ',')
  CRL_CACHE_TTL_SECONDS: '300'
  CRL_GRACE_SECONDS: '0'
  FACILITY_CACHE_TTL_SECONDS: '60'
  CAPACITY_CACHE_TTL_SECONDS: '60'
  HUB_UTILISATION_THRESHOLD: '0.9'
  ALLOW_SYMMETRIC_KEY_ATTESTATION: 'false'
  ALLOCATION_WITHOUT_CERTIFICATE_DURING_RENEWAL: 'allow'
  ALLOCATION_DEADLINE_SECONDS: '5'
  HEALTH_CHECK_TIMEOUT_SECONDS: '5'
  HEALTH_CACHE_SECONDS: '5'
  TWIN_TEMPLATE_CACHE_SECONDS: '60'
  TWIN_OVERRIDES_CACHE_SECONDS: '60'
  TWIN_DESIRED_LIMIT_BYTES: '32768'
  TWIN_DESIRED_BUDGET_BYTES: '24576'
  TWIN_MAX_DEPTH: '10'
  TWIN_TEMPLATE_MAX_BYTES: '262144'
  TWIN_ESSENTIAL_SECTIONS: 'telemetry,firmware,diagnostics'
  TWIN_RETRY_ATTEMPTS: '4'
  TWIN_RETRY_BASE_SECONDS: '0.5'
  TWIN_RETRY_BUDGET_SECONDS: '20'
  TWIN_CONFLICT_ATTEMPTS: '5'
  ROLLOUT_CANARY_SHARE: '0.1'
  ROLLOUT_CANARY_MIN: '1'
  ROLLOUT_CANARY_MAX_FAILURES: '0'
  ROLLOUT_WAVE_SIZE: '500'
  ROLLOUT_WRITES_PER_SECOND: '10'
  ROLLOUT_ACK_TIMEOUT_SECONDS: '120'
  ROLLOUT_ACK_POLL_SECONDS: '5'
  ROLLOUT_QUEUE: 'config-rollouts'
  DRIFT_ACTION: 'reapply'
  DRIFT_ACK_GRACE_SECONDS: '3600'
  DRIFT_MAX_WRITES: '2000'
  DRIFT_RETRY_BUDGET_SECONDS: '60'
  CONFIGURATION_LINK_SECONDS: '86400'
  CONFIGURATION_LINK_REFRESH_SECONDS: '21600'
  CONFIGURATION_LINK_REFRESH_BUDGET_SECONDS: '120'
  IOT_HUB_TIMEOUT_SECONDS: '10'
  CERT_VALIDITY_DAYS: '730'
  CERT_BACKDATE_MINUTES: '5'
  CERT_MAX_CSR_BYTES: '16384'
  CERT_CA_CACHE_SECONDS: '900'
  CERT_RENEW_DAYS: '90'
  CERT_RENEW_FRACTION: '0.3333'
  CERT_CRITICAL_DAYS: '30'
  CERT_CRITICAL_FRACTION: '0.10'
  CERT_SCAN_PAGE_SIZE: '1000'
  CERT_SCAN_UNREPORTED_PAGES: '5'
  CERT_SUPERSEDED_GRACE_HOURS: '24'
  CERT_OFFLINE_HOURS: '24'
  CERT_SIGN_DEADLINE_SECONDS: '10'
  CERT_REVOKE_DEADLINE_SECONDS: '30'
  CERT_ESCALATION_EMAIL: escalationEmail
  CERT_ALERT_SENDER: emailSender
  ACS_ENDPOINT: emailEndpoint
  CRL_VALIDITY_HOURS: string(crlValidityHours)
  CRL_REFRESH_BEFORE_HOURS: string(crlRefreshBeforeHours)
  // Manufacturing partners (docs/partners.md): Entra v2 access tokens of this tenant for the onboarding API's app
  // registration, validated by the app (signature against the tenant's keys, issuer, audience, expiry, app role).
  PARTNER_TOKEN_ISSUER: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
  PARTNER_TOKEN_AUDIENCE: partnerApiClientId
  PARTNER_TOKEN_JWKS_URL: '${environment().authentication.loginEndpoint}${tenant().tenantId}/discovery/v2.0/keys'
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(platformSettings, productSettings, appSettingOverrides)
}

// Function host logs (category FunctionAppLogs of Microsoft.Web/sites, "Monitor Azure Functions" data reference) in
// the workspace beside the platform metrics; the app's own telemetry goes to Application Insights regardless.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
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

output name string = site.name
output principalId string = site.identity.principalId
output baseUrl string = 'https://${site.properties.defaultHostName}'
