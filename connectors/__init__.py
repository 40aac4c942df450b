"""Adapters that reach a company's systems over the network: webhook delivery today."""
