// Key Vault for the regional intermediate CAs (HSM-backed keys need the Premium SKU), their CRLs (secrets
// crl-{caName}) and nothing else. RBAC authorization, purge protection: a CA key must never be purged by accident.

@description('Region of the vault.')
param location string

@description('Tags of every resource.')
param tags object

@minLength(3)
@maxLength(24)
@description('Key Vault name (globally unique, and reserved for 90 days after deletion).')
param name string

@description('Soft-delete retention; purge protection keeps a deleted vault this long.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Private networking (main.bicep vnetEnabled): only the private endpoint reaches the vault; no public network access.')
param privateOnly bool = false

@description('Log Analytics workspace of the diagnostic settings.')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'premium'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateOnly ? 'Deny' : 'Allow'
      bypass: privateOnly ? 'None' : 'AzureServices'
    }
  }
}

// Audit log: every key, certificate and secret operation with the caller's identity (who signed what, when).
// Category AuditEvent ("Supported logs for Microsoft.KeyVault/vaults", Azure Monitor reference); with the destination
// type Dedicated it lands in the resource-specific table AZKVAuditLogs, otherwise in AzureDiagnostics. The workbook's
// "CA key operations" tile reads both. Diagnostic settings API 2021-05-01-preview, as the Azure Verified Module
// avm/res/key-vault/vault uses.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'AuditEvent'
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

output name string = vault.name
output id string = vault.id
output vaultUri string = vault.properties.vaultUri
