"""The torch runtime: slots, isolation, blueprints (alpha curves: `kasmina.alpha`)."""
