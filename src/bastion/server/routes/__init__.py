"""The API's routes, one module per concern; `bastion.server.app` mounts them."""
