// Embeds the canary's raw image (FLEETPMU_CANARY_BIN, defined by the build) in the shim's
// read-only data.
    .section .rodata.fleetpmu_canary, "a"
    .balign 16
    .global fleetpmu_canary_image_begin
    .global fleetpmu_canary_image_end
fleetpmu_canary_image_begin:
    .incbin FLEETPMU_CANARY_BIN
fleetpmu_canary_image_end:
    .section .note.GNU-stack, "", %progbits
