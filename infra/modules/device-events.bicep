// DeviceCreated subscriptions: each hub's system topic delivers Microsoft.Devices.DeviceCreated to the
// function's Event Grid trigger (endpoint type AzureFunction: Event Grid resolves the function and its system
// key itself, no URL or key in a parameter). The function must already exist, so deploy.sh deploys this after
// publishing the code (main.bicep subscribeDeviceCreated=true). Delivery is retried for 24 hours, then the
// event is dead-lettered to a blob container with the system topic's own identity (no storage key).

@description('System topics of the hubs (iothubs.bicep).')
param systemTopicNames array

@description('Function app name.')
param functionAppName string

@description('Event Grid triggered function (twin_setup).')
param functionName string = 'on_device_created'

@description('Storage account of the dead-letter container.')
param storageAccountName string

@description('Dead-letter container.')
param deadLetterContainerName string

@description('Delivery attempts before dead-lettering.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an event is retried before dead-lettering (1440 = 24 hours, the Event Grid maximum).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = [for topicName in systemTopicNames: {
  name: topicName
}]

resource deviceCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = [for (topicName, i) in systemTopicNames: {
  parent: systemTopic[i]
  name: 'device-created-to-${functionName}'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${site.id}/functions/${functionName}'
        // Up to 10 events per delivery during a plant rollout (one at a time when traffic is light): far fewer
        // requests to the app, as "Use a function as an event handler for Event Grid events" recommends for high
        // throughput (its example: 10 events, 64 KB). The trigger still runs once per event. A failed batch is
        // redelivered whole; twin setup is idempotent, so that is safe.
        maxEventsPerBatch: 10
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Devices.DeviceCreated'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}]

output subscriptionNames array = [for (topicName, i) in systemTopicNames: deviceCreated[i].name]
