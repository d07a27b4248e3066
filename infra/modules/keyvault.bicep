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
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output name string = vault.name
output id string = vault.id
output vaultUri string = vault.properties.vaultUri
