"""diswoot.plugins"""
