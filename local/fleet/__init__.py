"""Fleet onboarding simulation: sensors that are manufactured, powered on, configured and renewed."""
