"""diswoot.webhook"""
