"""arctic"""
