// Role assignments: the least built-in roles each path of the code needs, at the narrowest scope.
// Role definition ids are the built-in ids documented in "Azure built-in roles" (Microsoft Learn,
// role-based-access-control/built-in-roles); the data actions behind the IoT Hub roles are in "Control access
// to IoT Hub by using Microsoft Entra ID". tests/infra/test_roles.py checks that these roles cover every
// Azure operation the code performs.
// Assignment names are guid(scope, principal, role), so a re-deployment never duplicates an assignment.

@description('Object id of the function app identity.')
param functionPrincipalId string

@description('Object id of the deployer; empty skips the deployer roles.')
param deployerPrincipalId string = ''

@description('Principal type of the deployer.')
param deployerPrincipalType string = 'User'

@description('Storage account of host storage, templates, queues and dead letters.')
param storageAccountName string

@description('Key Vault of the CAs (keys and certificates; the CRLs live in Blob Storage).')
param keyVaultName string

@description('Application Insights component (Entra-only ingestion).')
param applicationInsightsName string

@description('Regional IoT hubs.')
param hubNames array

@description('Identities of the hubs Event Grid system topics, in hub order (they write dead letters).')
param systemTopicPrincipalIds array

@description('Dead-letter container of the DeviceCreated subscriptions.')
param deadLetterContainerName string

@description('Blob container of the sensor configuration templates (the deployer uploads the samples).')
param templatesContainerName string = 'sensor-configurations'

@description('Blob container of the CRLs (the app publishes them with its account-wide Blob Data Owner; the deployer checks that each CA has one).')
param crlContainerName string = 'crl'

@description('Device Provisioning Service: the app disallows a device revoked for cause there (individual enrollments).')
param dpsName string

@description('Grant IoT Hub Data Contributor (edge deployments to gateways need configurations/applyToEdgeDevice/action, which only that built-in role includes) instead of Data Reader + Twin Contributor.')
param enableEdgeDeployments bool = true

@description('Communication Services resource; empty when e-mail is disabled.')
param communicationServiceName string = ''

// Built-in role definition ids (Microsoft Learn, "Azure built-in roles").
var roles = {
  // Storage: host storage with an identity needs Blob Data Owner ("Connecting to host storage with an
  // identity", Azure Functions reference); it also covers template reads and configuration writes, and, at this
  // account scope, Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action: the key that signs
  // the read-only SAS links sensors fetch offloaded configurations through (twin_setup/offload.py). No Storage Blob
  // Delegator assignment is added: it would grant nothing more. A user delegation SAS grants at most what its
  // signer may do, so the link's sp=r is what limits it (Microsoft Learn "Create a user delegation SAS").
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  // Queue triggers (certificate-renewals) and sends (certificate-alerts, security-alerts).
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  // Key Vault (RBAC mode): sign with the CA keys, read the CA certificates. No secret role: the CRLs are blobs.
  keyVaultCryptoUser: '12338af0-0e69-4776-bea7-57ae8d297424'
  keyVaultCertificateUser: 'db79e9a7-68ee-4b58-9aeb-b90e7c24fcba'
  keyVaultCertificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985'
  // DPS service API with Entra ID (individual enrollments: enrollments/read, write, delete), "Control access to Azure
  // IoT Hub Device Provisioning Service (DPS) by using Microsoft Entra ID": data actions Microsoft.Devices/
  // provisioningServices/*. The narrower Data Reader (10745317-c249-44a1-a5ce-3a4353c0bbd8) cannot write.
  dpsDataContributor: 'dfce44e4-17b7-4bd1-a6d1-04996ec95633'
  // Application Insights with local auth disabled.
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // IoT Hub data plane.
  iotHubDataContributor: '4fc6c259-987e-4a07-842e-c321cc9d413f'
  iotHubDataReader: 'b447c946-2db7-41ec-983d-d8bf3b1c77e3'
  iotHubTwinContributor: '494bdba2-168f-4f31-a0a1-191d2f7c028c'
  iotHubRegistryContributor: '4ea46cd5-c1b2-4a8e-910b-273211f9ce47'
  // Azure Communication Services e-mail send with Entra ID.
  communicationAndEmailServiceOwner: '09976791-48a7-449e-bb21-39d1a415f350'
}

var storageRoleIds = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
]
// Key Vault, vault scope: read the CA certificates. Signing (Key Vault Crypto User) is NOT granted here: deploy.sh
// assigns it at the scope of each CA key (.../vaults/{vault}/keys/intermediate-ca-{region}) once the key exists, so
// the app can sign with those keys and no other. Key Vault RBAC takes role assignments on an individual key, secret
// or certificate ("Provide access to Key Vault keys, certificates, and secrets with Azure RBAC"), but the object must
// exist first, and ARM creates none of them (the keys come from `az keyvault certificate create`), so Certificate User
// stays at the vault. No secret role: the product reads and writes no secret since the CRLs moved to Blob Storage
// (an environment of an earlier release keeps its Secrets Officer assignment: docs/deployment.md says how to delete it).
var keyVaultRoleIds = [
  roles.keyVaultCertificateUser
]
var deployerKeyVaultRoleIds = [
  roles.keyVaultCertificatesOfficer
]
var withDeployer = !empty(deployerPrincipalId)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource templatesContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: templatesContainerName
}

resource crlContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: crlContainerName
}

resource dps 'Microsoft.Devices/provisioningServices@2022-12-12' existing = {
  name: dpsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource hub 'Microsoft.Devices/IotHubs@2023-06-30' existing = [for hubName in hubNames: {
  name: hubName
}]

resource communication 'Microsoft.Communication/communicationServices@2023-04-01' existing = if (!empty(communicationServiceName)) {
  name: empty(communicationServiceName) ? 'none' : communicationServiceName
}

// --- the function app -------------------------------------------------------------------------------------

resource functionStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in storageRoleIds: {
  name: guid(storage.id, functionPrincipalId, roleId)
  scope: storage
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}]

resource functionKeyVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in keyVaultRoleIds: {
  name: guid(vault.id, functionPrincipalId, roleId)
  scope: vault
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}]

resource functionTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// IoT Hub. With edge deployments (default): Data Contributor, the only built-in role that includes
// configurations/applyToEdgeDevice/action (twin_setup applies gateway deployments). Without: Data Reader
// (statistics/read for hub capacity, devices/read, twins/read for queries) + Twin Contributor (twins/write) +
// Registry Contributor (devices/write: cert_lifecycle disables a revoked device).
resource functionHubData 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (hubName, i) in (enableEdgeDeployments ? hubNames : []): {
  name: guid(hub[i].id, functionPrincipalId, roles.iotHubDataContributor)
  scope: hub[i]
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.iotHubDataContributor)
  }
}]

resource functionHubReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (hubName, i) in (enableEdgeDeployments ? [] : hubNames): {
  name: guid(hub[i].id, functionPrincipalId, roles.iotHubDataReader)
  scope: hub[i]
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.iotHubDataReader)
  }
}]

resource functionHubTwins 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (hubName, i) in (enableEdgeDeployments ? [] : hubNames): {
  name: guid(hub[i].id, functionPrincipalId, roles.iotHubTwinContributor)
  scope: hub[i]
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.iotHubTwinContributor)
  }
}]

resource functionHubRegistry 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (hubName, i) in (enableEdgeDeployments ? [] : hubNames): {
  name: guid(hub[i].id, functionPrincipalId, roles.iotHubRegistryContributor)
  scope: hub[i]
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.iotHubRegistryContributor)
  }
}]

// DPS: revocation for cause creates a disabled individual enrollment for the device (shared/dps.py), and nothing
// else; Data Contributor is the one built-in role that may write enrollments, at the scope of this DPS alone.
resource functionDps 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dps.id, functionPrincipalId, roles.dpsDataContributor)
  scope: dps
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.dpsDataContributor)
  }
}

resource functionEmail 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(communicationServiceName)) {
  name: guid(communication.id, functionPrincipalId, roles.communicationAndEmailServiceOwner)
  scope: communication
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.communicationAndEmailServiceOwner)
  }
}

// --- the hubs' Event Grid system topics: write dead letters, to that one container only --------------------

resource topicDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for topicPrincipalId in systemTopicPrincipalIds: {
  name: guid(deadLetterContainer.id, topicPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    principalId: topicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}]

// --- the deployer (deploy.sh): upload the sample templates, create the CA certificates, check the CRLs ------

resource deployerTemplates 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withDeployer) {
  name: guid(templatesContainer.id, deployerPrincipalId, roles.storageBlobDataContributor)
  scope: templatesContainer
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// `az storage blob exists` on crl/{ca}.crl (publish_first_crls): read, on that one container.
resource deployerCrls 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withDeployer) {
  name: guid(crlContainer.id, deployerPrincipalId, roles.storageBlobDataReader)
  scope: crlContainer
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
  }
}

resource deployerKeyVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in (withDeployer ? deployerKeyVaultRoleIds : []): {
  name: guid(vault.id, deployerPrincipalId, roleId)
  scope: vault
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}]
