// A virtual network with two delegated subnets: one for the Container Apps environment, one for PostgreSQL.
// PostgreSQL gets no public endpoint at all; only the apps in the environment can reach it.

@description('Name of the virtual network.')
param name string

param location string = resourceGroup().location
param tags object = {}

param addressPrefix string = '10.0.0.0/16'

@description('Subnet of the Container Apps environment (workload profiles: /27 at least; /23 leaves room to scale).')
param appsSubnetPrefix string = '10.0.0.0/23'

@description('Subnet delegated to PostgreSQL Flexible Server.')
param postgresSubnetPrefix string = '10.0.2.0/24'

var appsSubnetName = 'container-apps'
var postgresSubnetName = 'postgres'

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appsSubnetName
        properties: {
          addressPrefix: appsSubnetPrefix
          delegations: [
            {
              name: 'container-apps'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: postgresSubnetName
        properties: {
          addressPrefix: postgresSubnetPrefix
          delegations: [
            {
              name: 'postgres'
              properties: {
                serviceName: 'Microsoft.DBforPostgreSQL/flexibleServers'
              }
            }
          ]
        }
      }
    ]
  }
}

output id string = vnet.id
output appsSubnetId string = '${vnet.id}/subnets/${appsSubnetName}'
output postgresSubnetId string = '${vnet.id}/subnets/${postgresSubnetName}'
