REVOKE ALL ON events, webhook_endpoints, webhook_deliveries FROM atomic_server;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
DROP TABLE events;
