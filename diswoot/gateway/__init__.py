"""diswoot.gateway"""
