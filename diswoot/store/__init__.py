"""diswoot.store"""
