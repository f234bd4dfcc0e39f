"""diswoot.chatwoot"""
