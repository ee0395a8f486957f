"""SegDeepLib.crf"""
