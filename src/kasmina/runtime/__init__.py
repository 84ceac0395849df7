"""The torch runtime: slots, alpha, isolation, blueprints."""
