"""diswoot.bridge"""
