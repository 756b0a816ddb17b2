"""RabbitMQ integration: one robust connection, a pool of confirm-mode channels."""

from quartstack.integrations.rabbitmq.client import QueueInfo, RabbitMQClient

__all__ = ["QueueInfo", "RabbitMQClient"]
