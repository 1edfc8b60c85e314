// One secret in an existing vault. The value arrives as a secure parameter, so it never shows in the
// deployment history; the apps reference the secret by its versionless URI and so follow rotations.

@description('Name of the existing vault.')
param vaultName string

@description('Name of the secret.')
param name string

@secure()
param value string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: name
  properties: {
    value: value
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

output name string = secret.name
output uri string = secret.properties.secretUri
