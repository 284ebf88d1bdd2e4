"""The REST API: read-only viewsets with filters; state changes are actions that call one service."""

from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from .models import Blast
from .tracking import poll_due
from .wsapme import get_client


class BlastViewSet(viewsets.GenericViewSet):
    queryset = Blast.objects.all()

    @action(detail=True, methods=["post"], url_path="check-status")
    def check_status(self, request, pk=None):
        """Ask WSAPME now for the status of every unfinished message of this blast."""
        tally = poll_due(client=get_client(), blast_id=self.get_object().pk)
        return Response({"checked": sum(tally.values()), "updated": tally["updated"]})
