"""Typed async SDK over the generated gRPC stubs: one module per capability, all on `Connection`."""
