"""Queue sinks: routes that publish to RabbitMQ, NATS JetStream or Redis Streams."""
