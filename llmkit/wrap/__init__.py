"""Wrappers around providers: the fallback chain and OpenTelemetry instrumentation."""
