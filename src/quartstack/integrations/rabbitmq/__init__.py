"""RabbitMQ integration: one robust connection, a pool of confirm-mode channels."""

from quartstack.integrations.rabbitmq.client import ExchangeMessage, QueueInfo, RabbitMQClient

__all__ = ["ExchangeMessage", "QueueInfo", "RabbitMQClient"]
