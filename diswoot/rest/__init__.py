"""diswoot.rest"""
