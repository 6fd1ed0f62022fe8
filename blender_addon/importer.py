"""GLB bytes -> one mesh object at the 3D cursor, or nothing at all.

Blender's glTF importer may add more than the mesh (empties, extra materials or images); everything
it created besides our object is removed, and if anything fails, everything it created is removed
and the selection is restored, so a failure leaves the scene as it was.
"""

from __future__ import annotations

import os
import tempfile

import bpy

TRACKED = ("objects", "meshes", "materials", "images", "textures", "node_groups", "collections", "actions")


def _snapshot() -> dict[str, set[int]]:
    return {kind: {block.as_pointer() for block in getattr(bpy.data, kind)} for kind in TRACKED}


def _created_since(before: dict[str, set[int]]) -> dict[str, list[bpy.types.ID]]:
    return {
        kind: [block for block in getattr(bpy.data, kind) if block.as_pointer() not in before[kind]]
        for kind in TRACKED
    }


def _remove(blocks: dict[str, list[bpy.types.ID]], keep: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    for kind in ("objects", "collections", "meshes", "materials", "node_groups", "textures", "images", "actions"):
        collection = getattr(bpy.data, kind)
        for block in blocks[kind]:
            if block.as_pointer() not in keep and block.name in collection:
                collection.remove(block)


def import_glb(context: bpy.types.Context, glb: bytes, name: str) -> bpy.types.Object:
    """Import `glb` as one object named `name`, at the 3D cursor, selected and active."""
    before = _snapshot()
    previous_active = context.view_layer.objects.active
    previous_selection = [o for o in context.scene.objects if o.select_get()]
    handle, path = tempfile.mkstemp(suffix=".glb", prefix="image_to_3d_")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(glb)
        result = bpy.ops.import_scene.gltf(filepath=path)
        if "FINISHED" not in result:
            raise RuntimeError("Blender's glTF importer could not read the mesh the server sent.")
        created = _created_since(before)
        meshes = [o for o in bpy.data.objects if o.as_pointer() not in before["objects"] and o.type == "MESH"]
        if len(meshes) != 1:
            raise RuntimeError(f"Expected one mesh in the server's answer, found {len(meshes)}.")
        obj = meshes[0]
        _finish_object(context, obj, name)
        keep = {obj.as_pointer(), obj.data.as_pointer()}
        keep |= {slot.material.as_pointer() for slot in obj.material_slots if slot.material}
        _remove(created, keep)
        for other in context.scene.objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        return obj
    except BaseException:
        _remove(_created_since(before))
        for other in previous_selection:
            if other.name in bpy.data.objects:
                other.select_set(True)
        context.view_layer.objects.active = previous_active
        raise
    finally:
        if os.path.exists(path):
            os.remove(path)


def _finish_object(context: bpy.types.Context, obj: bpy.types.Object, name: str) -> None:
    world = obj.matrix_world.copy()
    obj.parent = None
    obj.matrix_world = world
    obj.name = name
    obj.data.name = name
    obj.location = context.scene.cursor.location
    obj.data.shade_smooth()
    if obj.users_collection and context.collection not in obj.users_collection:
        for collection in list(obj.users_collection):
            collection.objects.unlink(obj)
        context.collection.objects.link(obj)
    ensure_vertex_color_material(obj)


def ensure_vertex_color_material(obj: bpy.types.Object) -> bpy.types.Material:
    """A material whose Base Color is the mesh's colour attribute (Material Preview, EEVEE, Cycles)."""
    mesh = obj.data
    attribute = mesh.color_attributes.active_color or (mesh.color_attributes[0] if mesh.color_attributes else None)
    material = obj.active_material
    if material is None:
        material = bpy.data.materials.new(obj.name)
        mesh.materials.append(material)
    material.use_nodes = True
    tree = material.node_tree
    principled = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if principled is None:
        principled = tree.nodes.new("ShaderNodeBsdfPrincipled")
        output = next((n for n in tree.nodes if n.type == "OUTPUT_MATERIAL"), None) or tree.nodes.new("ShaderNodeOutputMaterial")
        tree.links.new(principled.outputs["BSDF"], output.inputs["Surface"])
    base = principled.inputs["Base Color"]
    if attribute is not None and not base.is_linked:
        node = tree.nodes.new("ShaderNodeVertexColor")
        node.layer_name = attribute.name
        node.location = (principled.location.x - 300, principled.location.y)
        tree.links.new(node.outputs["Color"], base)
    return material
