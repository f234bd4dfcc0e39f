"""diswoot.testing"""
